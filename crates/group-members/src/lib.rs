//! Who is in a Kafka consumer group: librdkafka's `DescribeConsumerGroups`, for groups of either protocol
//! (KIP-848 `consumer` groups through ConsumerGroupDescribe, `classic` ones through DescribeGroups; librdkafka
//! picks). rust-rdkafka wraps only the classic list (`fetch_group_list`), which a KIP-848 group answers with
//! GROUP_ID_NOT_FOUND, so this crate is the project's one use of `unsafe`: a handful of librdkafka calls on a
//! client the caller already has, every pointer freed on every path.
//!
//! ```no_run
//! # fn demo(consumer: &rdkafka::consumer::BaseConsumer) -> Result<(), String> {
//! use rdkafka::consumer::Consumer;
//! let group = group_members::describe(consumer.client(), "tabs_makers", std::time::Duration::from_secs(5))?;
//! println!("{} members, I am {:?}", group.members.len(), group.me);
//! # Ok(()) }
//! ```

use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// A consumer group as its coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The members' ids, sorted.
    pub members: Vec<String>,
    /// The calling client's own member id (librdkafka's `rd_kafka_memberid`). A KIP-848 client picks it before it
    /// joins, so it is no proof of membership: look for it in `members`.
    pub me: Option<String>,
}

/// Describes `group` with `client`'s connection (any client type; the caller's user needs Describe on the group).
/// Blocking, for at most `timeout`.
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<Group, String> {
    let name = CString::new(group).map_err(|_| format!("group name {group:?} holds a NUL byte"))?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();
    // SAFETY: `rk` is a live client for the duration of this call (borrowed from `client`). Each object created
    // here (queue, options, event) is owned by a guard that destroys it exactly once; the strings read from the
    // result are copied before the event that owns them is destroyed.
    unsafe {
        let queue = Owned(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let options = options(rk, timeout_ms)?;
        let mut groups = [name.as_ptr()];
        rd::rd_kafka_DescribeConsumerGroups(rk, groups.as_mut_ptr(), 1, options.0, queue.0);
        // The request timeout bounds the answer; the poll waits a little longer so the timeout arrives as an
        // error event rather than as nothing.
        let event = Owned(
            rd::rd_kafka_queue_poll(queue.0, timeout_ms.saturating_add(1_000)),
            rd::rd_kafka_event_destroy,
        );
        if event.0.is_null() {
            return Err(format!(
                "no answer describing group {group} within {timeout:?}"
            ));
        }
        let members = members(event.0)?;
        Ok(Group {
            members,
            me: own_member_id(rk),
        })
    }
}

/// Options of one DescribeConsumerGroups call, bounded by `timeout_ms`.
///
/// # Safety
/// `rk` is a live client.
unsafe fn options(
    rk: *mut rd::rd_kafka_t,
    timeout_ms: i32,
) -> Result<Owned<rd::rd_kafka_AdminOptions_t>, String> {
    let options = Owned(
        rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        ),
        rd::rd_kafka_AdminOptions_destroy,
    );
    let mut errstr = [0 as c_char; 256];
    let set = rd::rd_kafka_AdminOptions_set_request_timeout(
        options.0,
        timeout_ms,
        errstr.as_mut_ptr(),
        errstr.len(),
    );
    if set != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(text(errstr.as_ptr()));
    }
    Ok(options)
}

/// The sorted member ids of the one group a DescribeConsumerGroups answer describes, or its error.
///
/// # Safety
/// `event` is a live event (not null), which outlives this call.
unsafe fn members(event: *mut rd::rd_kafka_event_t) -> Result<Vec<String>, String> {
    if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(text(rd::rd_kafka_event_error_string(event)));
    }
    let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
    if result.is_null() {
        return Err("librdkafka answered DescribeConsumerGroups with another event".into());
    }
    let mut count = 0usize;
    let described = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
    if described.is_null() || count != 1 {
        return Err(format!(
            "DescribeConsumerGroups gave {count} groups for one asked"
        ));
    }
    let description = *described;
    let error = rd::rd_kafka_ConsumerGroupDescription_error(description);
    if !error.is_null() {
        return Err(text(rd::rd_kafka_error_string(error)));
    }
    let mut members: Vec<String> =
        (0..rd::rd_kafka_ConsumerGroupDescription_member_count(description))
            .map(|i| rd::rd_kafka_ConsumerGroupDescription_member(description, i))
            .filter(|member| !member.is_null())
            .map(|member| text(rd::rd_kafka_MemberDescription_consumer_id(member)))
            .collect();
    members.sort();
    Ok(members)
}

/// The client's own member id, if it has one yet.
///
/// # Safety
/// `rk` is a live client.
unsafe fn own_member_id(rk: *mut rd::rd_kafka_t) -> Option<String> {
    let own = rd::rd_kafka_memberid(rk);
    if own.is_null() {
        return None;
    }
    let id = text(own);
    rd::rd_kafka_mem_free(rk, own.cast());
    Some(id).filter(|id| !id.is_empty())
}

/// A librdkafka object and its destructor, called once when the guard goes (nothing for a null pointer).
struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor and is destroyed only here.
            unsafe { (self.1)(self.0) }
        }
    }
}

/// A C string as owned text (empty for a null pointer).
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that lives for this call.
unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    CStr::from_ptr(ptr).to_string_lossy().into_owned()
}
