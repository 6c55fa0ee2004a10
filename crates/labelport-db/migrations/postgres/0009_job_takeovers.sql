-- Whether the job's current attempt began by taking over a lease that ran
-- out (its worker died): shown in logs and counted in /metrics.
ALTER TABLE jobs ADD COLUMN taken_over BOOLEAN NOT NULL DEFAULT FALSE;
