-- What the execution view shows of each step's definition, kept beside it so
-- that reading a view does not parse every definition: the tool, the
-- resolved action ('' for loops) and the planned kind (task, for_each,
-- while, join; a loop becomes join once expanded).
ALTER TABLE steps ADD COLUMN tool TEXT;
ALTER TABLE steps ADD COLUMN action TEXT NOT NULL DEFAULT '';
ALTER TABLE steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'task';
UPDATE steps SET tool = definition #>> '{step,tool}',
    action = COALESCE(definition #>> '{step,action}', ''),
    kind = COALESCE(definition ->> 'kind', 'task');
