-- Leases: one holder at a time for work only one node must do (firing cron
-- triggers). A lease is held until it expires; its holder renews it.
CREATE TABLE leases (
	name       text COLLATE "C" PRIMARY KEY,
	holder     text NOT NULL,
	expires_at timestamptz NOT NULL
);
