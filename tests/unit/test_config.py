"""pipeline.toml: the shipped demo loads, and every bad input names its key and fix."""
from __future__ import annotations

import subprocess

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import REPO, write_pipeline


def test_shipped_pipeline_is_the_arm64_demo():
    cfg = config.load(REPO / "pipeline.toml")
    t = cfg.target().target
    assert (t.runtime, t.arch, t.python, t.glibc) == ("python3.13", "arm64", "3.13", "2.34")
    assert cfg.sets["efs"].lines == ("torch==2.9.1", "torchvision==0.24.1")
    assert cfg.sets["layer"].names() == {"pillow"}
    local = cfg.target("local")
    assert local.target.kind == "local" and local.override == ("torch==2.13.0+cpu",) and local.exclude == ("torchvision",)
    assert local.pip_config_find_links  # the machine's wheel folder is read at run time, not written here


def test_the_committed_config_and_locks_name_no_path_of_this_machine():
    tracked = subprocess.run(["git", "ls-files", "pipeline.toml", "requirements/"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = [REPO / f for f in tracked if f.endswith((".toml", ".lock"))]
    assert len(files) >= 3
    for path in files:
        text = path.read_text()
        for fragment in ("file://", "/opt/wheels", "/root/", ".pyenv", "/work/", "/home/"):
            assert fragment not in text, f"{path.name} names {fragment}"


@pytest.mark.parametrize(
    ("old", "new", "key", "fix"),
    [
        ('runtime = "python3.13"', 'runtime = "python3.8"', "targets.arm.runtime", 'runtime = "python3.13"'),
        ('arch = "arm64"', 'arch = "aarch64"', "targets.arm.arch", 'arch = "arm64"'),
        ('mount_path = "/mnt/test"', 'mount_path = "/efs/test"', "efs.mount_path", "/mnt/hoist"),
        ('mount_path = "/mnt/test"', 'mount_path = "/mnt/a/b"', "efs.mount_path", "single directory"),
        ('name = "test-fn"', 'name = "bad name!"', "function.name", "hoist-classifier"),
        ('[sets.layer]', '[sets.extra]', "sets.extra", "[sets.layer]"),
        ('kind = "local"', 'kind = "laptop"', "targets.local.kind", 'kind = "lambda"'),
        ('default_target = "local"', 'default_target = "prod"', "default_target", "local"),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { AWS_REGION = "eu-west-1" }', "function.environment", "remove it from [function] environment"),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { HOIST_EFS_TREE = "/x" }', "function.environment", "set by Hoist itself"),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { "1X" = "y" }', "function.environment", "a letter, then at least one more"),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { X = "y" }', "function.environment", "a letter, then at least one more"),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { TZ = "UTC" }', "function.environment", "set by Lambda itself"),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { BIG = "' + "x" * 3500 + '" }', "function.environment", "Lambda takes 4 KB in all"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(project, wheelhouse, old, new, key, fix):
    path = write_pipeline(project, wheelhouse, {old: new})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert key in text and "fix:" in text and fix in text


def test_a_toml_syntax_error_shows_its_line_with_a_caret_and_the_fix_loads(project, wheelhouse):
    # GIVEN a pipeline.toml with a string left open
    good = write_pipeline(project, wheelhouse).read_text()
    path = write_pipeline(project, wheelhouse, {'arch = "arm64"': 'arch = "arm64'})
    lines = path.read_text().splitlines()
    number = lines.index('arch = "arm64') + 1
    # WHEN it is loaded
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    # THEN the error quotes that line with a caret at the column tomllib names, and says where to fix it
    shown = text.splitlines()
    at = shown.index(f'    {number} | arch = "arm64')
    assert shown[at + 1] == " " * len(f"    {number} | ") + " " * len('arch = "arm64') + "^"
    assert "fix: fix the syntax in pipeline.toml at the line shown" in text
    # and with the quote closed it loads
    path.write_text(good)
    assert config.load(path).targets["arm"].target.arch == "arm64"


def test_a_package_in_both_sets_is_refused(project):
    (project / "requirements" / "layer.in").write_text("layerpkg\nNativePkg>=0.5  # same package, other spelling\n")
    with pytest.raises(ConfigError, match="nativepkg listed in both sets") as err:
        config.load(project / "pipeline.toml")
    assert "remove the line from one of the two .in files" in str(err.value)


def test_a_missing_requirements_file_is_named(project):
    (project / "requirements" / "efs.in").unlink()
    with pytest.raises(ConfigError, match=r"efs\.in does not exist") as err:
        config.load(project / "pipeline.toml")
    assert "sets.efs.requirements" in str(err.value)


def test_options_in_requirements_belong_in_the_config(project):
    (project / "requirements" / "efs.in").write_text("--extra-index-url https://example.invalid/simple\nnativepkg\n")
    with pytest.raises(ConfigError, match="option line") as err:
        config.load(project / "pipeline.toml")
    assert "[[index]]" in str(err.value)


def test_unknown_target_on_the_command_line(project):
    cfg = config.load(project / "pipeline.toml")
    with pytest.raises(ConfigError, match="no target named 'x86'") as err:
        cfg.target("x86")
    assert "arm, local" in str(err.value) and "did you mean" not in err.value.render()
    with pytest.raises(ConfigError) as typo:
        cfg.target("locl")
    assert "did you mean --target local?" in typo.value.render()
    assert cfg.target("local").target.name == "local"  # that fix, taken


def test_index_packages_and_find_links_are_read(project, wheelhouse):
    path = write_pipeline(project, wheelhouse, {"[build]": '[[index]]\nname = "pytorch-cpu"\nurl = "https://download.pytorch.org/whl/cpu"\npackages = ["Torch"]\n\n[build]'})
    cfg = config.load(path)
    assert cfg.indexes[0].packages == ("torch",)
    assert cfg.find_links == (str(wheelhouse),) and cfg.no_index


def test_config_errors_happen_before_any_download(project, wheelhouse, monkeypatch):
    """A bad config fails in load(); lock never gets to run uv."""
    from builder import lock as lock_mod

    monkeypatch.setattr(lock_mod.proc, "run", lambda *a, **k: pytest.fail("uv was started"))
    path = write_pipeline(project, wheelhouse, {'runtime = "python3.13"': 'runtime = "python4.0"'})
    with pytest.raises(ConfigError):
        lock_mod.lock(config.load(path), "arm")


@pytest.mark.parametrize(
    ("old", "new", "key", "said", "fix"),
    [
        ('name = "test-fn"', 'name = "test-fn"\nmemory = 2048', "function.memory", "did you mean 'memory_mb'", "memory_mb = 2048"),
        ('runtime = "python3.13"', 'runtme = "python3.13"', "targets.arm.runtme", "did you mean 'runtime'", 'runtime = "python3.13"'),
        ("[function]", "[fucntion]", "fucntion", "unknown table [fucntion]; did you mean [function]", "rename it to [function]"),
        ('no_index = true', 'no_index = true\nfind_link = []', "find_link", "did you mean 'find_links'", "the top level already sets find_links"),  # the test's file sets find_links
        ('name = "test-fn"', 'name = "test-fn"\ncolour = "red"', "function.colour", "unknown key 'colour' in [function]", "memory_mb"),
    ],
)
def test_unknown_keys_and_tables_name_the_closest_known_one(project, wheelhouse, old, new, key, said, fix):
    path = write_pipeline(project, wheelhouse, {old: new})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert f"pipeline.toml: {key})" in text and said in text and fix in text
    assert "problems" not in text  # the typo is said once, not also as a missing key


def test_placeholder_ids_are_named_per_element_with_the_id_form(project, wheelhouse):
    """The README's "subnet-..." placeholders: one problem per element with the id's form, no extra "too short" line."""
    path = write_pipeline(project, wheelhouse, {})
    path.write_text(path.read_text() + '\n[deploy]\nstack_name = "s"\nregion = "eu-west-1"\nartifact_bucket = "my-bucket"\nvpc_id = "vpc-0123456789abcdef0"\n'
                    'subnet_ids = ["subnet-...", "subnet-..."]\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "2 problems" in text and "deploy.subnet_ids[0]" in text and "deploy.subnet_ids[1]" in text
    assert "id of an existing subnet of your account (subnet- and 8 to 17 hex digits)" in text
    assert "after validation" not in text
    # an element of a list without a description of its own says what was expected too (a trial met "not of the form this key takes")
    path.write_text(path.read_text().replace('subnet_ids = ["subnet-...", "subnet-..."]', 'route_table_ids = ["rtb-..."]'))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert 'deploy.route_table_ids[0] = "rtb-...": expected an AWS rtb-... id' in str(err.value) and "not of the form this key takes" not in str(err.value)


def test_a_misspelt_key_whose_right_name_is_already_set_is_removed_not_renamed(project, wheelhouse):
    """Renaming would write the key twice, which TOML refuses: the fix is to delete the line."""
    path = write_pipeline(project, wheelhouse, {'name = "test-fn"': 'name = "test-fn"\nmemory_mb = 1024\nmemory = 2048'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "did you mean 'memory_mb'" in text and "remove the line memory = 2048; [function] already sets memory_mb" in text
    assert "rename it" not in text
    fixed = path.read_text().replace("memory = 2048\n", "")
    path.write_text(fixed)
    assert config.load(path).function.memory_mb == 1024  # the fix, applied, loads


@pytest.mark.parametrize(
    ("old", "new", "key", "fix"),
    [
        ('name = "test-fn"', 'name = "test-fn"\nmemory_mb = "2048"', "function.memory_mb", "memory_mb = 3008"),  # a string is not a number
        ('name = "test-fn"', 'name = "test-fn"\nmemory_mb = 20000', "function.memory_mb", "128-10240"),
        ("no_index = true", "no_index = 1", "no_index", "no_index"),
        ('arch = "arm64"', 'arch = "arm64"\ntorch_backend = "cu121"', "targets.arm.torch_backend", 'torch_backend = "cpu"'),
        ('arch = "arm64"', 'arch = "arm64"\n[[targets.arm.index]]\nname = "cpu"\nurl = "ftp://x"', "targets.arm.index[0].url", "https://"),
        ('kind = "local"', 'kind = "local"\narch = "arm64"', "targets.local", 'kind = "lambda"'),
    ],
)
def test_values_are_checked_against_the_declared_schema(project, wheelhouse, old, new, key, fix):
    path = write_pipeline(project, wheelhouse, {old: new})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert f"pipeline.toml: {key})" in text and "fix:" in text and fix in text


def test_every_problem_is_reported_at_once(project, wheelhouse):
    path = write_pipeline(project, wheelhouse, {'name = "test-fn"': 'name = "test-fn"\nmemory = 2048\ntimeout_s = 0', 'arch = "arm64"': 'arch = "arm46"'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "3 problems" in text and "memory_mb" in text and "function.timeout_s" in text and "targets.arm.arch" in text


def test_region_is_checked_offline_against_botocore(tmp_path, wheelhouse, monkeypatch):
    from tests.deploy_support import deploy_project

    deploy_project(tmp_path, wheelhouse)
    path = tmp_path / "pipeline.toml"
    config.aws_regions.cache_clear()
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # no session is opened: a bad profile stops nothing offline
    assert config.load(path).deploy.region == "eu-west-1"
    path.write_text(path.read_text().replace('region = "eu-west-1"', 'region = "eu-west1"'))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "deploy.region" in text and "unknown AWS region 'eu-west1'" in text and 'region = "eu-west-1"' in text


@pytest.mark.parametrize("region", ["ap-southeast-6", "ca-west-1", "mx-central-1"])
def test_a_region_where_lambda_cannot_mount_efs_is_refused(tmp_path, wheelhouse, region):
    """Issue 23, 15. Lambda Developer Guide, "Configuring file system access for Lambda functions", Supported Regions:
    all commercial regions except New Zealand, Taipei, Malaysia, Mexico (Central), Thailand and Canada West (Calgary)."""
    from tests.deploy_support import deploy_project

    path = deploy_project(tmp_path, wheelhouse)
    path.write_text(path.read_text().replace('region = "eu-west-1"', f'region = "{region}"'))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "deploy.region" in text and f"Lambda cannot mount EFS in {region}" in text and "fix" in text
    assert region in config.aws_regions()  # botocore knows it: refused for EFS, not as a typo


def test_a_target_has_its_own_indexes_and_pins(project, wheelhouse):
    path = write_pipeline(project, wheelhouse, {'arch = "arm64"': 'arch = "arm64"\noverride = ["purepkg==2.0"]\ntorch_backend = "cpu"\n'
                                                '[[targets.arm.index]]\nname = "pytorch-cpu"\nurl = "https://download.pytorch.org/whl/cpu"\npackages = ["Torch"]'})
    cfg = config.load(path)
    arm, local = cfg.target("arm"), cfg.target("local")
    assert arm.indexes[0].packages == ("torch",) and arm.override == ("purepkg==2.0",) and arm.torch_backend == "cpu" and not arm.allow_gpu
    assert local.indexes == () and local.torch_backend is None and cfg.indexes == ()


def test_paths_are_relative_to_the_config_even_when_left_out(project):
    cfg = config.load(project / "pipeline.toml")
    assert cfg.sync.local_path == project / ".hoist-efs" and cfg.build.output == project / "dist"
    assert cfg.build_json("arm") == project / "dist" / "arm" / "build.json"


def test_the_schema_is_data_every_table_forbids_unknown_keys():
    """One declaration per key: each table is a model that rejects what it does not declare."""
    from pydantic import BaseModel

    models = [m for m in vars(config).values() if isinstance(m, type) and issubclass(m, BaseModel) and m is not config.Section and m.__module__ == config.__name__]
    assert len(models) >= 12
    assert all(m.model_config.get("extra") == "forbid" and m.model_config.get("frozen") for m in models)
    assert config.FunctionConfig.model_fields["memory_mb"].default == 3008


def test_slim_and_validate_settings_are_read_and_checked(tmp_path, wheelhouse):
    (tmp_path / "handler").mkdir()
    (tmp_path / "handler" / "app.py").write_text("def handler(event, context):\n    return {}\n")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("nativepkg\n")
    (tmp_path / "requirements" / "layer.in").write_text("layerpkg\n")
    extra = ('[slim]\nenabled = true\ndisable = ["type-stubs"]\nkeep = ["x/**"]\n[slim.sets.layer]\nkeep = ["PIL/**"]\n[slim.packages.Scikit_Image]\nkeep = ["skimage/**/*.pyi"]\n'
             '[validate]\nwaive = [{ rule = "needed-libraries", files = "efs:a/*.so", reason = "optional" }]\n\n[build]')
    write_pipeline(tmp_path, wheelhouse, {"[build]": extra})
    cfg = config.load(tmp_path / "pipeline.toml")
    assert cfg.slim == config.SlimConfig(enabled=True, disable=("type-stubs",), keep=("x/**",), set_keep={"layer": ("PIL/**",)}, package_keep={"scikit-image": ("skimage/**/*.pyi",)})
    assert cfg.waivers == (config.Waiver("needed-libraries", "efs:a/*.so", "optional"),)
    assert config.load(REPO / "pipeline.toml").slim == config.SlimConfig() and config.load(REPO / "pipeline.toml").waivers == ()


@pytest.mark.parametrize(
    ("table", "key", "fix"),
    [
        ("[slim]\nenabled = 1", "slim.enabled", "bool"),
        ("[slim]\nkeep = ['/abs/**']", "slim.keep", "skimage/**/*.pyi"),
        ("[slim]\nsets.lambda.keep = ['x']", "slim.sets.lambda", "efs, layer"),
        ("[slim]\nrules = []", "slim", "disable"),
        ("[validate]\nwaive = [{ rule = 'x', files = 'a.so', reason = 'r' }]", "validate.waive[0].files", "efs:"),
        ("[validate]\nwaive = [{ rule = 'x', files = 'efs:a.so', reason = ' ' }]", "validate.waive[0].reason", "printed on every run"),
        ("[validate]\nwaive = [{ rule = 'x', files = 'efs:a.so' }]", "validate.waive[0].reason", "reason"),
    ],
)
def test_bad_slim_and_validate_settings_name_the_key(tmp_path, wheelhouse, table, key, fix):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("nativepkg\n")
    (tmp_path / "requirements" / "layer.in").write_text("layerpkg\n")
    write_pipeline(tmp_path, wheelhouse, {"[build]": table + "\n\n[build]"})
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path / "pipeline.toml")
    assert key in (err.value.where or "") and fix in (err.value.fix or "")


def test_datasync_for_the_stacks_file_system_needs_the_writer_access_point_and_role(tmp_path, wheelhouse):
    from tests.deploy_support import deploy_project

    datasync = ('\n[sync]\nmethod = "datasync"\n[sync.datasync]\nbucket = "stage-bucket"\nregion = "eu-west-1"\n'
                'file_system_arn = "arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0123456789abcdef0"\n'
                'subnet_arn = "arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-0123456789abcdef0"\nsecurity_group_arns = ["arn:aws:ec2:eu-west-1:123456789012:security-group/sg-1"]\n'
                's3_role_arn = "arn:aws:iam::123456789012:role/s3"\n')
    path = deploy_project(tmp_path, wheelhouse)
    path.write_text(path.read_text() + datasync)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "access_point_arn and file_system_role_arn" in str(err.value) and "WriterAccessPointArn" in str(err.value)
    path.write_text(path.read_text() + 'access_point_arn = "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/fsap-0123456789abcdef0"\n'
                    'file_system_role_arn = "arn:aws:iam::123456789012:role/sync"\n')
    assert config.load(path).sync.datasync.access_point_arn


# pydantic's own words: its prefix for a validator's ValueError, regular expressions, Python classes, "after validation"
PYDANTIC_WORDING = ("value error", "should match pattern", "input should be", "after validation", "<class", "^", "$", "valid tuple", "valid dictionary")


@pytest.mark.parametrize(
    ("old", "new", "key", "said", "fix", "applied"),
    [
        ('mount_path = "/mnt/test"', 'mount_path = "/efs/test"', "efs.mount_path", "expected a single directory under /mnt", 'mount_path = "/mnt/hoist"', None),
        ('name = "test-fn"', 'name = "bad name!"', "function.name", "expected 1-64 letters, digits, - or _", 'name = "hoist-classifier"', None),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { "1X" = "y" }', "function.environment", "'1X' is not a name Lambda takes", 'MY_1X = "y"',
         'name = "test-fn"\nenvironment = { MY_1X = "y" }'),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { TZ = "UTC" }', "function.environment", "TZ is set by Lambda itself", "remove it from [function] environment",
         'name = "test-fn"\nenvironment = {}'),
        ('name = "test-fn"', 'name = "test-fn"\nenvironment = { A1 = 3 }', "function.environment.A1", "expected a string, in quotes", 'A1 = "3"',
         'name = "test-fn"\nenvironment = { A1 = "3" }'),
        ('name = "test-fn"', 'name = "test-fn"\nmemory_mb = "2048"', "function.memory_mb", "expected a whole number, written without quotes", "memory_mb = 3008", None),
        ('name = "test-fn"', 'name = "test-fn"\nreserved_concurrency = 0', "function.reserved_concurrency", "expected a whole number from 1 to 10000",
         "set reserved_concurrency = 10", 'name = "test-fn"\nreserved_concurrency = 10'),
        ('name = "test-fn"', 'name = "test-fn"\nreserved_concurrency = "many"', "function.reserved_concurrency", 'or "unreserved"',
         'reserved_concurrency = "unreserved"', 'name = "test-fn"\nreserved_concurrency = "unreserved"'),
        ('name = "test-fn"', 'name = "test-fn"\nmemory_mb = 20000', "function.memory_mb", "more than 10240, the most this key takes", "memory_mb = 3008", None),
        ("no_index = true", "no_index = 1", "no_index", "expected true or false", "set no_index = true or no_index = false", None),
        ('kind = "local"', 'kind = "laptop"', "targets.local.kind", 'expected "lambda" or "local"', 'kind = "local"', 'kind = "local"'),
        ('name = "test-api"', 'name = "test-api"\nthrottle_rate = 0', "api.throttle_rate", "expected more than 0", "throttle_rate = 50", None),
        ('name = "test-api"', 'name = "test-api"\nthrottle_rate = "x"', "api.throttle_rate", "expected a number, written without quotes", "throttle_rate = 50", None),
        ('python = "', 'exclude = [1]\npython = "', "targets.local.exclude[0]", "expected a string, in quotes", 'exclude = ["1"]', 'exclude = ["1"]\npython = "'),
        ('python = "', 'override = "purepkg==2.0"\npython = "', "targets.local.override", "expected a list, in brackets", 'override = ["purepkg==2.0"]',
         'override = ["purepkg==2.0"]\npython = "'),
        ("[build]", '[validate]\nwaive = [{ rule = "x", files = "a.so", reason = "r" }]\n\n[build]', "validate.waive[0].files", "expected <set>:<glob>", 'files = "efs:', None),
    ],
)
def test_errors_are_said_in_hoists_words_and_the_fix_loads(project, wheelhouse, old, new, key, said, fix, applied):
    """No regular expression, no "value error", no Python class: what the key expected, and a fix that, applied, loads."""
    path = write_pipeline(project, wheelhouse, {old: new})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert f"pipeline.toml: {key})" in text and said in text and fix in text, text
    assert not [w for w in PYDANTIC_WORDING if w in text.lower()], text
    if applied is None and fix.count(" = ") == 1 and "\n" not in new:  # the one line, as the fix writes it
        applied = new.split(" = ", 1)[0] + " = " + fix.split(" = ", 1)[1]
    if applied is not None:
        path.write_text(path.read_text().replace(new, applied))
        config.load(path)  # the fix, applied, loads


@pytest.mark.parametrize(
    ("handler", "said", "fix"),
    [
        ("app", "handler 'app' is not <module>.<function>", 'set handler = "app.handler"'),
        ("app.py", "handler/app.py defines no py", 'set handler = "app.handler"'),
        ("apps.handler", "there is no handler/apps.py", 'set handler = "app.handler"'),
        ("app.handle", "handler/app.py defines no handle", 'set handler = "app.handler"'),
        ("mine.handler", "there is no handler/mine.py", "create handler/mine.py with def handler(event, context)"),
        ("app.nothing_like_it", "handler/app.py defines no nothing_like_it", "add def nothing_like_it(event, context) to handler/app.py"),
    ],
)
def test_a_handler_that_lambda_could_not_import_is_refused_at_load_with_a_fix_that_works(project, wheelhouse, handler, said, fix):
    path = write_pipeline(project, wheelhouse, {'name = "test-fn"': f'name = "test-fn"\nhandler = "{handler}"'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "pipeline.toml: function.handler)" in str(err.value) and said in str(err.value) and fix in err.value.fix, str(err.value)
    if fix.startswith("set "):
        path.write_text(path.read_text().replace(f'handler = "{handler}"', fix.removeprefix("set ")))
    elif fix.startswith("create "):
        (project / "handler" / "mine.py").write_text("def handler(event, context):\n    return {}\n")
    else:
        (project / "handler" / "app.py").write_text((project / "handler" / "app.py").read_text() + "\n\ndef nothing_like_it(event, context):\n    return {}\n")
    assert config.load(path).function.handler  # the fix, applied, loads


def test_a_handler_in_a_subfolder_or_package_loads_as_lambda_imports_it(project, wheelhouse):
    """awslambdaric takes folders/module.function with / or . between folders."""
    for handler in ("hoist_lambda/events.respond", "hoist_lambda.events.respond"):
        assert config.load(write_pipeline(project, wheelhouse, {'name = "test-fn"': f'name = "test-fn"\nhandler = "{handler}"'})).function.handler == handler
    path = write_pipeline(project, wheelhouse, {'handler_dir = "handler"': 'handler_dir = "src"'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "build.handler_dir" in str(err.value) and "the handler folder src does not exist" in str(err.value)


def test_a_model_folder_that_is_written_must_be_there_and_the_default_one_stays_optional(project, wheelhouse):
    assert not (project / "model").exists() and config.load(project / "pipeline.toml").model_dir == project / "model" / "artifacts"  # not written: optional
    (project / "model" / "artifacts").mkdir(parents=True)
    path = write_pipeline(project, wheelhouse, {"[api]": '[model]\ndir = "model/artifact"\n\n[api]'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "pipeline.toml: model.dir)" in str(err.value) and "the model folder model/artifact does not exist" in str(err.value)
    assert err.value.fix == 'set dir = "model/artifacts" under [model]'
    path.write_text(path.read_text().replace('dir = "model/artifact"', 'dir = "model/artifacts"'))
    assert config.load(path).model_dir == project / "model" / "artifacts"  # the fix, applied, loads

    path = write_pipeline(project, wheelhouse, {"[api]": '[model]\ndir = "elsewhere"\n\n[api]'})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "the model folder elsewhere does not exist" in str(err.value) and "remove dir from [model]" in err.value.fix
    path.write_text(path.read_text().replace('dir = "elsewhere"\n', ""))
    assert not config.load(path).model_dir_set  # the other fix, applied, loads
