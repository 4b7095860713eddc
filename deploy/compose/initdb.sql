-- Run once by the postgres container on an empty volume (docker-entrypoint-initdb.d), as
-- POSTGRES_USER. POSTGRES_DB (the app DB, `anubis`) already exists; Dagster's storage and the
-- demo orders source get their own databases on the same server.
CREATE DATABASE dagster;
CREATE DATABASE orders;
