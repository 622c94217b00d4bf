"""The container image, built from the Dockerfile with podman and run as users run it."""
