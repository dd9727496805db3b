"""The Loom services: batch, rules, tracking, scheduler and the HTTP gateway."""
