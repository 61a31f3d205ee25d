-- Which worker recorded each attempt (process identity), for audits and for
-- checking how work spread over processes.
ALTER TABLE checkpoints ADD COLUMN worker TEXT;
