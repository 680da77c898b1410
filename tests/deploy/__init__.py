"""Tests of what the deployments set up: compose, Kubernetes, the broker users."""
