-- Evaluation prompts for decontamination: every prompt in the test split.
SELECT text FROM prompts WHERE split = 'test'
