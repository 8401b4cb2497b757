module medicine-pubsub.dev/docker-context

go 1.26

require github.com/moby/patternmatcher v0.6.0
