"""Build real wheels for the tests: pure Python ones and one with a C extension.

A wheel is a zip with METADATA, WHEEL and RECORD (PEP 427); writing them here
keeps the tests off the network and independent of setuptools.
"""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

EXTENSION_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

static PyObject *hypot2(PyObject *self, PyObject *args) {
    double a, b;
    if (!PyArg_ParseTuple(args, "dd", &a, &b)) return NULL;
    return PyFloat_FromDouble(sqrt(a * a + b * b));
}

static PyMethodDef methods[] = {{"hypot2", hypot2, METH_VARARGS, "sqrt(a*a+b*b)"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fast", NULL, -1, methods};
PyMODINIT_FUNC PyInit__fast(void) { return PyModule_Create(&module); }
"""

LIB_C = r"""
int answer(void) { return 42; }
static int helper_with_a_long_symbol_name_for_the_symtab(int x) { return x * 3; }
int triple(int x) { return helper_with_a_long_symbol_name_for_the_symtab(x); }
"""


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, tag: str, files: dict[str, bytes | str], requires: list[str] = ()) -> Path:
    """Write ``{name}-{version}-{tag}.whl`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    contents = {k: (v.encode() if isinstance(v, str) else v) for k, v in files.items()}
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    contents[f"{dist}/METADATA"] = meta.encode()
    py, abi, plat = tag.split("-")
    wheel_tags = [f"{p}-{a}-{pl}" for p in py.split(".") for a in abi.split(".") for pl in plat.split(".")]
    contents[f"{dist}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: hoist-tests\nRoot-Is-Purelib: " + ("true" if abi == "none" else "false") + "\n" + "".join(f"Tag: {t}\n" for t in wheel_tags)).encode()
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in sorted(contents.items()))
    contents[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    path = folder / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in sorted(contents.items()):
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if arc.endswith(".so") else 0o100644) << 16
            zf.writestr(info, data)
    return path


def compile_extension(workdir: Path) -> bytes:
    """A real CPython extension for the running interpreter, with debug info."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "_fast.c"
    src.write_text(EXTENSION_C)
    out = workdir / ("_fast" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", f"-I{sysconfig.get_paths()['include']}", str(src), "-o", str(out), "-lm"], check=True)
    return out.read_bytes()


def compile_library(workdir: Path, name: str = "libdemo.so", filler: int = 0, source: str = LIB_C) -> Path:
    """A small shared library; ``filler`` extra functions grow its symbol table
    and debug info past a page, as in real libraries."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / (name + ".c")
    extra = "".join(f"int filler_function_with_a_rather_long_name_number_{i}(int x) {{ return x + {i}; }}\n" for i in range(filler))
    src.write_text(source + extra)
    out = workdir / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O0", str(src), "-o", str(out)], check=True)
    return out


def local_abi() -> str:
    return "cp{}{}".format(*sys.version_info[:2])


def make_sdist(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A source distribution (PEP 625 name) built by setuptools from setup.py."""
    import io
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    base = f"{name.replace('-', '_')}-{version}"
    contents = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n',
        **files,
    }
    path = folder / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in sorted(contents.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{rel}")
            info.size, info.mtime, info.mode = len(data), 1577836800, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


CEXT_SETUP = """\
from setuptools import Extension, setup

setup(name="{name}", version="{version}", packages=["{pkg}"], ext_modules=[Extension("{pkg}._speed", ["{pkg}/_speed.c"])])
"""

CEXT_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *triple(PyObject *self, PyObject *args) { long x; if (!PyArg_ParseTuple(args, "l", &x)) return NULL; return PyLong_FromLong(3 * x); }
static PyMethodDef methods[] = {{"triple", triple, METH_VARARGS, "3x"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
"""
