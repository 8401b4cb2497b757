module medicine-pubsub.dev/kube-dev/strimzi-operator

go 1.26
