-- The election tables walcast streams, as the Django application defines
-- them (names without the app prefix; see --tables for mapping Django's
-- "app_model" names). Idempotent: safe to apply twice.
--
-- REPLICA IDENTITY FULL makes the WAL carry the whole old row, so that a
-- deleted row's message has every column (committee_id included, which
-- scoping needs) and updates report exactly which columns changed.

CREATE TABLE IF NOT EXISTS committee (
    id             bigserial PRIMARY KEY,
    code           text    NOT NULL UNIQUE,
    name           text    NOT NULL,
    electors_count integer NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS candidate (
    id     bigserial PRIMARY KEY,
    number integer NOT NULL UNIQUE,
    name   text    NOT NULL
);

CREATE TABLE IF NOT EXISTS guarantee (
    id           bigserial   PRIMARY KEY,
    committee_id bigint      NOT NULL REFERENCES committee (id),
    user_id      bigint      NOT NULL,
    elector_id   bigint,
    elector_name text        NOT NULL DEFAULT '',
    status       text        NOT NULL DEFAULT 'medium'
                 CHECK (status IN ('strong', 'medium', 'weak')),
    notes        text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS guarantee_committee_status ON guarantee (committee_id, status);
CREATE INDEX IF NOT EXISTS guarantee_user_status ON guarantee (user_id, status);
ALTER TABLE guarantee REPLICA IDENTITY FULL;

CREATE TABLE IF NOT EXISTS attendance (
    id           bigserial   PRIMARY KEY,
    committee_id bigint      NOT NULL REFERENCES committee (id),
    elector_id   bigint      NOT NULL,
    user_id      bigint      NOT NULL, -- who marked it
    attended     boolean     NOT NULL DEFAULT true,
    marked_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (committee_id, elector_id)
);
CREATE INDEX IF NOT EXISTS attendance_user ON attendance (user_id);
ALTER TABLE attendance REPLICA IDENTITY FULL;

CREATE TABLE IF NOT EXISTS vote_count (
    id           bigserial   PRIMARY KEY,
    committee_id bigint      NOT NULL REFERENCES committee (id),
    candidate_id bigint      NOT NULL REFERENCES candidate (id),
    votes        integer     NOT NULL DEFAULT 0 CHECK (votes >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (committee_id, candidate_id)
);
ALTER TABLE vote_count REPLICA IDENTITY FULL;

-- committee_id NULL is an election-wide result, delivered to everyone.
CREATE TABLE IF NOT EXISTS election_results (
    id           bigserial    PRIMARY KEY,
    committee_id bigint       REFERENCES committee (id),
    candidate_id bigint       NOT NULL REFERENCES candidate (id),
    total_votes  integer      NOT NULL DEFAULT 0,
    percentage   numeric(5,2) NOT NULL DEFAULT 0,
    rank         integer,
    generated_at timestamptz  NOT NULL DEFAULT now(),
    details      jsonb        NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS election_results_scope
    ON election_results (coalesce(committee_id, 0), candidate_id);
ALTER TABLE election_results REPLICA IDENTITY FULL;
