-- alignloop warehouse, schema version 1.
-- Every id is a content hash of what defines the row (see warehouse/ids.py).
-- JSON columns hold canonical JSON; list columns are native DuckDB lists.

CREATE TABLE IF NOT EXISTS prompts (
    id VARCHAR PRIMARY KEY,
    messages JSON NOT NULL,          -- chat list [{"role": ..., "content": ...}]
    text VARCHAR NOT NULL,           -- the conversation flattened, for display and length filters
    norm_hash VARCHAR NOT NULL,      -- hash of the normalised text, for exact dedup
    source VARCHAR NOT NULL,
    split VARCHAR NOT NULL,          -- train | test
    reference VARCHAR,               -- reference answer, if any
    tags VARCHAR[],
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS models (
    id VARCHAR PRIMARY KEY,
    uri VARCHAR NOT NULL,            -- local folder, hub name or API model name
    role VARCHAR NOT NULL,           -- policy | judge | reward | prm | aligner | reference
    parent_id VARCHAR,               -- base model this one was trained from
    training_run_id VARCHAR,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS rounds (
    id VARCHAR PRIMARY KEY,          -- the user's name for the round
    policy_model_id VARCHAR,
    parent_round_id VARCHAR,
    config JSON,
    status VARCHAR NOT NULL DEFAULT 'open',
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS responses (
    id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    sampling JSON,
    seed BIGINT,
    sample_index INTEGER NOT NULL DEFAULT 0,
    text VARCHAR NOT NULL,
    steps VARCHAR[],
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    finish_reason VARCHAR,
    parent_id VARCHAR,               -- the response this one corrects
    origin VARCHAR NOT NULL,         -- policy | aligner | human_edit | reference | import
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Feedback: one typed table per kind. source: human | ai | rule | reward_model.

CREATE TABLE IF NOT EXISTS comparisons (
    id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,
    response_a VARCHAR NOT NULL,     -- shown first (position A)
    response_b VARCHAR NOT NULL,
    winner VARCHAR NOT NULL,         -- a | b | tie | invalid
    prob_a DOUBLE,                   -- soft label P(a better), debiased over both orders
    verdict_ab VARCHAR,              -- raw verdict with a shown first
    verdict_ba VARCHAR,              -- raw verdict with b shown first
    consistent BOOLEAN,
    judge VARCHAR NOT NULL,          -- model id + template version, verifier name, or annotator
    source VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    rationale VARCHAR,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS rankings (
    id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,
    response_ids VARCHAR[] NOT NULL, -- best first
    scores DOUBLE[],                 -- aligned with response_ids (e.g. Borda points)
    permutations JSON,               -- the orders shown to the judge
    judge VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS ratings (
    id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,
    response_id VARCHAR NOT NULL,
    aspect VARCHAR NOT NULL DEFAULT 'overall',
    score DOUBLE,                    -- NULL when the verdict was invalid
    scale_min DOUBLE NOT NULL,
    scale_max DOUBLE NOT NULL,       -- binary thumbs: scale 0..1
    judge VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    rationale VARCHAR,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS step_labels (
    id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,
    response_id VARCHAR NOT NULL,
    step_index INTEGER NOT NULL,
    label SMALLINT,                  -- -1 | 0 | +1; NULL when invalid
    flagged BOOLEAN NOT NULL DEFAULT false,
    finish_reason VARCHAR,           -- of the labelling (e.g. PRM800K found_error, solution)
    judge VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS corrections (
    id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,      -- the query
    original_id VARCHAR NOT NULL,    -- response corrected
    corrected_id VARCHAR NOT NULL,   -- response with the correction (origin aligner | human_edit)
    judge VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    meta JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Previous versions of feedback rows replaced in place (an annotator edits an annotation).
CREATE TABLE IF NOT EXISTS feedback_history (
    feedback_table VARCHAR NOT NULL,
    feedback_id VARCHAR NOT NULL,
    row_json JSON NOT NULL,
    replaced_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS annotation_tasks (
    id VARCHAR PRIMARY KEY,          -- hash of kind, round and the items sent
    kind VARCHAR NOT NULL,
    round_id VARCHAR NOT NULL,
    project_id BIGINT,
    task_id BIGINT,
    item_ids VARCHAR[] NOT NULL,
    payload JSON NOT NULL,           -- task data as sent
    status VARCHAR NOT NULL DEFAULT 'pushed',  -- pushed | annotated | deleted
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS datasets (
    id VARCHAR PRIMARY KEY,          -- name@version
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    params JSON NOT NULL,
    source_counts JSON,
    row_counts JSON,
    content_hash VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    UNIQUE (name, version)
);

CREATE TABLE IF NOT EXISTS training_runs (
    id VARCHAR PRIMARY KEY,
    method VARCHAR NOT NULL,
    config JSON NOT NULL,
    dataset_id VARCHAR,
    base_model_id VARCHAR,
    reference_model_id VARCHAR,
    output_model_id VARCHAR,
    round_id VARCHAR,
    status VARCHAR NOT NULL DEFAULT 'running',
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    meta JSON
);

CREATE TABLE IF NOT EXISTS training_metrics (
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    value DOUBLE,
    PRIMARY KEY (run_id, step, name)
);

CREATE TABLE IF NOT EXISTS evaluations (
    id VARCHAR PRIMARY KEY,          -- hash of kind, target, round, metric and config
    kind VARCHAR NOT NULL,           -- judge_quality | heldout | reward_accuracy | ...
    target VARCHAR NOT NULL,         -- model id, judge id or dataset id evaluated
    round_id VARCHAR,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    details JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Content-addressed files computed from snapshots (e.g. reference log-probs).
CREATE TABLE IF NOT EXISTS artifacts (
    id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    inputs JSON NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
