-- kiln's Postgres schema. Each record is kept whole as JSON in `data`,
-- exactly as the bbolt backend keeps it, so a field added to a Go type
-- needs no migration; a column exists only where SQL must see a value: a
-- key, a constraint, a join or a filter. Ids are compared byte-wise
-- (COLLATE "C"): they are time-ordered strings, and listings and cursors
-- walk them in that order whatever the database's locale.

CREATE TABLE apps (
	id   text COLLATE "C" PRIMARY KEY,
	name text NOT NULL,
	data json NOT NULL,
	CONSTRAINT apps_name_key UNIQUE (name)
);

CREATE TABLE fns (
	id      text COLLATE "C" PRIMARY KEY,
	app_id  text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
	name    text NOT NULL,
	-- the app's secrets the fn names: DeleteSecret refuses one in use
	secrets text[] NOT NULL DEFAULT '{}',
	data    json NOT NULL,
	CONSTRAINT fns_app_name_key UNIQUE (app_id, name)
);
CREATE INDEX fns_app_id ON fns (app_id, id);

CREATE TABLE triggers (
	id     text COLLATE "C" PRIMARY KEY,
	app_id text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
	fn_id  text COLLATE "C" NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
	name   text NOT NULL,
	type   text NOT NULL,
	source text NOT NULL,
	data   json NOT NULL,
	CONSTRAINT triggers_app_name_key UNIQUE (app_id, name)
);
-- An http trigger's path is its route; cron triggers may share a schedule.
CREATE UNIQUE INDEX triggers_app_http_source_key ON triggers (app_id, source) WHERE type = 'http';
CREATE INDEX triggers_app_id ON triggers (app_id, id);
CREATE INDEX triggers_fn_id ON triggers (fn_id, id);
CREATE INDEX triggers_type_id ON triggers (type, id);

CREATE TABLE secrets (
	app_id     text COLLATE "C" NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
	name       text COLLATE "C" NOT NULL,
	sealed     bytea NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (app_id, name)
);

CREATE TABLE calls (
	fn_id      text COLLATE "C" NOT NULL REFERENCES fns (id) ON DELETE CASCADE,
	id         text COLLATE "C" NOT NULL,
	app_id     text COLLATE "C" NOT NULL,
	status     text NOT NULL CHECK (status IN ('queued', 'running', 'success', 'error', 'timeout')),
	created_at timestamptz NOT NULL,
	-- the API's view of the call, and apart from it the stored request
	-- of a detached call, written once
	data       json NOT NULL,
	request    json,
	PRIMARY KEY (fn_id, id)
);
-- ListCallsByStatus walks a status oldest first.
CREATE INDEX calls_status_id ON calls (status, id, fn_id);
-- EnqueueCall counts a fn's queued calls in its transaction.
CREATE INDEX calls_queued_fn ON calls (fn_id) WHERE status = 'queued';

-- Logs grow by appends while the call record changes status: apart, each
-- write touches one small row.
CREATE TABLE call_logs (
	fn_id   text COLLATE "C" NOT NULL,
	call_id text COLLATE "C" NOT NULL,
	log     bytea NOT NULL,
	PRIMARY KEY (fn_id, call_id),
	FOREIGN KEY (fn_id, call_id) REFERENCES calls (fn_id, id) ON DELETE CASCADE
);
