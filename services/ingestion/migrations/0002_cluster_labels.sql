-- Labels of each cluster, as its newest AgentStarted reported them ({"env": "prod", ...}).
-- Command selectors, derogation scopes and user scopes match on them (`labels @> '{...}'`).
ALTER TABLE clusters ADD COLUMN labels JSONB NOT NULL DEFAULT '{}';
CREATE INDEX clusters_labels ON clusters USING GIN (labels jsonb_path_ops);
