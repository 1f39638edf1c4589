// Package deploy holds no code: its tests check the deployment files
// (Dockerfile, docker-compose.yml, the Prometheus config, the Grafana
// dashboard and provisioning; for a cluster, haproxy.cfg,
// cluster/docker-compose.yml and the kubernetes/ manifests) against kilnd
// as it is, as far as a machine without a Docker engine or a Kubernetes
// cluster can. haproxy.cfg is also checked by HAProxy and run by it in
// front of stand-in nodes.
package deploy
