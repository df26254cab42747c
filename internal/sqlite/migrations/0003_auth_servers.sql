-- 0003: external authorization servers (register-auth-server): the JWKS URLs
-- whose tokens the client API accepts, with the options of each. Every broker
-- reads them again every few seconds, so a change needs no restart.
CREATE TABLE auth_servers (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	url           TEXT    NOT NULL UNIQUE,
	jws_algorithm TEXT    NOT NULL DEFAULT '', -- '': any algorithm the key allows
	issuer        TEXT    NOT NULL DEFAULT '', -- '': "iss" not checked
	audience      TEXT    NOT NULL DEFAULT '', -- '': "aud" not checked
	created_at    INTEGER NOT NULL
);
