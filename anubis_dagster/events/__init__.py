"""Events out (issue 25): the outbox (`db.outbox`) published to Kafka for other services."""
