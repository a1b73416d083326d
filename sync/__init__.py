"""invoke sync-efs and efs-gc: put built trees on EFS as immutable versions."""
