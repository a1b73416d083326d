"""Hoist's runtime library for Lambda handlers (standard library only at import).

One job per module:

- ``activate``: put the EFS dependency tree on ``sys.path`` (its hot set
  read from the build's archives into memory); any handler calls
  ``activate.activate()`` first, before importing torch, and
  ``activate.release()`` once its init is over;
- ``archive``: the archives' format, which the build writes with it too;
- ``hotimport``: the path hook that imports the hot set from memory;
- ``hotmeta``: importlib.metadata's reads of the tree's distributions,
  answered from the hot set during init;
- ``hotlines``: linecache's reads of the hot sources (tracebacks,
  inspect), answered from the hot set during init;
- ``prefetch``: the libraries' pages read ahead in the background;
- ``contract``: the model folder's files and the schema of preprocess.json,
  checked without torch;
- ``model``: load a model folder (EFS or S3), check the labels against the
  model's output on a dummy input;
- ``events``: API Gateway (HTTP API 2.0, REST 1.0) and direct-invoke events
  in, proxy responses out, the 4xx contract (``BadRequest``);
- ``images``: decode PNG/JPEG safely and preprocess into a tensor;
- ``aws``: one S3 client per execution environment;
- ``snapstart``: SnapStart's hooks, one call (``snapstart.prepare(warm=...)``):
  a warm-up inference and release before the snapshot; reseeded generators
  and fresh clients after each restore;
- ``log``: one JSON line per event.

``app.py`` beside this package is the demo handler built from these parts; a
handler of your own imports them the same way (docs/handler.md, "Your own handler").
"""
