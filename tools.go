//go:build tools

// Package kiln pins dependencies that later commits use, so go mod tidy keeps them.
package kiln

import (
	_ "github.com/containerd/containerd"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/robfig/cron/v3"
	_ "github.com/sirupsen/logrus"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/bbolt"
)
