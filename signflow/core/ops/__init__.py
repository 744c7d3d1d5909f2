"""Operations on a running site: backup and restore, retention, consistency
checks and recovery, renewal of archive timestamps."""
