// The Strimzi cluster operator pod's stand-in, for the end-to-end test (documentation/TESTING.md).
//
// make_infra.sh installs Strimzi's operator as released and waits for its Deployment to roll out. On the test's
// real node that pod needs an image of the operator's name (quay.io/strimzi/operator), and the registry it comes
// from cannot be reached. The operator's work (the Kafka, KafkaNodePool, KafkaTopic and KafkaUser resources made
// into pods, Services, Secrets, users and ACLs) is done by `kube-dev strimzi`, which runs beside the brokers
// outside the pod. This program only answers the probes of the released Deployment (/healthy and /ready on
// port 8080) and says what it is, so that the pod is what it claims: a placeholder, not the operator.
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log.Printf("Strimzi operator stand-in (args %q): the operator's work is done by kube-dev strimzi outside this pod; serving /healthy and /ready on :8080", os.Args[1:])
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	mux.HandleFunc("/healthy", ok)
	mux.HandleFunc("/ready", ok)
	server := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
