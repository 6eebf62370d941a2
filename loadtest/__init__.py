"""Locust load tests for the gateway; `traffic` is the request mix, `locustfile` drives it."""
