// Package deploy holds no code: its tests check the deployment files
// (Dockerfile, docker-compose.yml, the Prometheus config, the Grafana
// dashboard and provisioning) against kilnd as it is, as far as a machine
// without a Docker engine can.
package deploy
