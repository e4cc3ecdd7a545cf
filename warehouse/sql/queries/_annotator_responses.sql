-- Fragment (included by annotation_retire_step_labels.sql and annotation_retire_pair_ratings.sql): one row per
-- (annotator, response) an edited annotation covers, from the parallel VARCHAR[] lists $judges and $responses.
SELECT
    unnest($judges::VARCHAR []) AS judge,
    unnest($responses::VARCHAR []) AS response_id
