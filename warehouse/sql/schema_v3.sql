-- Rankings and corrections name what they ranked or corrected for, as comparisons do: 'overall' unless a file or
-- judge says otherwise (e.g. a listwise judge asked for harmlessness, a correction under the harmless principle).
-- Existing rows become 'overall'.
ALTER TABLE rankings ADD COLUMN aspect VARCHAR NOT NULL DEFAULT 'overall';
ALTER TABLE corrections ADD COLUMN aspect VARCHAR NOT NULL DEFAULT 'overall';
