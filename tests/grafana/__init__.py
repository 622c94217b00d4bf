"""The Grafana dashboards and their provisioning, checked statically."""
