"""Going live beside the legacy services: what they sent (readers), importing it, go-live
points, shadow runs and their comparison. See docs/cutover.md."""
