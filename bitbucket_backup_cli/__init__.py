"""`bitbucket-backup`, the operator command line (`bitbucket_backup_cli.main`). It is not Lambda code: the
functions' asset does not contain it."""
