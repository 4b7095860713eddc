-- Run once by the postgres container on an empty volume (docker-entrypoint-initdb.d), by psql as
-- the superuser POSTGRES_USER, which nothing else uses. Databases and least-privilege roles:
--
--   database  owner (DDL)     who else                     used by
--   anubis    anubis_owner    anubis_app: read/write rows   owner: `setup` (anubis db upgrade,
--                                         no DDL            names import); app: code server,
--                                                           daemon, webserver, run workers
--   dagster   dagster         -                            every Dagster process (its storage:
--                                                           Dagster creates and migrates it)
--   orders    marketplace     orders_reader: SELECT only    marketplace: `setup`'s demo orders
--                                                           and `order-feed` (the stand-in for
--                                                           the marketplace); reader: intake
--
-- No role may connect to a database it has no business in (CONNECT is revoked from PUBLIC).
-- Passwords come from the container's environment (psql's \getenv, PostgreSQL 15+): the
-- *_DB_PASSWORD variables of deploy/.env, set on the postgres service.
-- Production (managed PostgreSQL, Kubernetes): create the same roles once with this file
-- (`psql -v ON_ERROR_STOP=1 -f initdb.sql` as an administrator, the variables exported); the
-- orders source is the marketplace's database: ask its owner for a SELECT-only role instead.

\getenv app_owner_password APP_OWNER_DB_PASSWORD
\getenv app_password APP_DB_PASSWORD
\getenv dagster_password DAGSTER_DB_PASSWORD
\getenv orders_reader_password ORDERS_READER_DB_PASSWORD
\getenv marketplace_password MARKETPLACE_DB_PASSWORD

CREATE ROLE anubis_owner LOGIN PASSWORD :'app_owner_password';
CREATE ROLE anubis_app LOGIN PASSWORD :'app_password';
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE ROLE orders_reader LOGIN PASSWORD :'orders_reader_password';
CREATE ROLE marketplace LOGIN PASSWORD :'marketplace_password';

CREATE DATABASE anubis OWNER anubis_owner;
CREATE DATABASE dagster OWNER dagster;
CREATE DATABASE orders OWNER marketplace;

REVOKE ALL ON DATABASE anubis, dagster, orders FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE anubis TO anubis_app;  -- intake stages rows in a temp table
GRANT CONNECT ON DATABASE orders TO orders_reader;

-- the app DB: the owner's tables (created by the migrations, now and later) are read/write for
-- the application, which cannot create, alter or drop anything
\connect anubis
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO anubis_app;
ALTER DEFAULT PRIVILEGES FOR ROLE anubis_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO anubis_app;
ALTER DEFAULT PRIVILEGES FOR ROLE anubis_owner IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO anubis_app;

-- the orders source: the marketplace's tables are SELECT-only for the reader
\connect orders
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO orders_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE marketplace IN SCHEMA public
    GRANT SELECT ON TABLES TO orders_reader;
