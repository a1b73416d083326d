"""The Lambda handler (kept small: this folder is what gets zipped).

At init, once per execution environment, the EFS dependency tree named by
HOIST_EFS_TREE is put on sys.path after the runtime's own entries, so the
runtime's packages (awslambdaric, boto3) keep working. The image classifier
itself arrives with the handler issue; until then the handler reports what it
loaded. It imports nothing from the pipeline.
"""
import json
import os
import sys
import time

_T0 = time.perf_counter()
EFS_TREE = os.environ.get("HOIST_EFS_TREE", "")
if EFS_TREE and EFS_TREE not in sys.path:
    sys.path.append(EFS_TREE)
INIT_SECONDS = time.perf_counter() - _T0


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"efs_tree": EFS_TREE or None, "on_path": bool(EFS_TREE) and EFS_TREE in sys.path, "init_seconds": INIT_SECONDS}),
    }
