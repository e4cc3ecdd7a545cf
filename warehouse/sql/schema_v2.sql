-- Comparisons name what they judged: 'overall' unless a file or judge says otherwise (e.g. PKU-SafeRLHF's
-- helpfulness and harmlessness verdicts on the same two responses). Existing rows become 'overall'.
ALTER TABLE comparisons ADD COLUMN aspect VARCHAR NOT NULL DEFAULT 'overall';
