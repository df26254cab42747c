-- 0005: external authorization servers (register-auth-server): the JWKS URLs
-- whose tokens the client API accepts, with the options of each. Every broker
-- of the cluster reads them again every few seconds, so a change made on one
-- is in effect on all without a restart.
CREATE TABLE auth_servers (
	seq           BIGSERIAL PRIMARY KEY,
	url           TEXT   NOT NULL UNIQUE,
	jws_algorithm TEXT   NOT NULL DEFAULT '', -- '': any algorithm the key allows
	issuer        TEXT   NOT NULL DEFAULT '', -- '': "iss" not checked
	audience      TEXT   NOT NULL DEFAULT '', -- '': "aud" not checked
	created_at    BIGINT NOT NULL
);
