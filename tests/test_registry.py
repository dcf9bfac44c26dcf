"""Trainer types: built-ins, import_class, and entry points of real distributions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import trainerkit
from trainerkit import registry
from trainerkit.errors import ConfigError
from trainerkit.trainers.local import LocalModelTrainer

PLUGIN_SOURCE = textwrap.dedent(
    '''
    import dataclasses
    import trainerkit
    from trainerkit.schema import option
    from trainerkit.trainers.local import LocalModelTrainer, LocalTrainerConfig

    @dataclasses.dataclass(frozen=True)
    class AcmeConfig:
        region: str = option("eu", doc="where ACME trains", choices=["eu", "us"])

    class AcmeTrainer(LocalModelTrainer):
        name = "ACME"
        ConfigSchema = AcmeConfig

        def __init__(self, config, instance_name):
            self.region = config.region
            super().__init__(LocalTrainerConfig(), instance_name)
    '''
)


@pytest.fixture
def installed_plugin(tmp_path):
    """A real distribution (a .dist-info with entry_points.txt) on a path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_trainerkit.py").write_text(PLUGIN_SOURCE)
    dist = site / "acme_trainerkit-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-trainerkit\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[trainerkit.trainers]\nACME = acme_trainerkit:AcmeTrainer\n")
    return site


def run_python(code: str, site) -> dict:
    script = f"import sys; sys.path.insert(0, {str(site)!r})\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_entry_point_types_are_listed_without_importing_them(installed_plugin):
    result = run_python(
        """
        import json, sys, trainerkit
        from trainerkit import registry
        types = registry.available_types()
        print(json.dumps({"types": {k: str(v) for k, v in types.items()},
                          "imported": "acme_trainerkit" in sys.modules}))
        """,
        installed_plugin,
    )
    assert "entry point (acme-trainerkit 1.2.3)" == result["types"]["ACME"]
    assert result["imported"] is False


def test_an_entry_point_type_is_imported_only_when_config_asks_for_it(installed_plugin):
    result = run_python(
        """
        import json, sys, trainerkit
        plain = trainerkit.TrainerManager()
        before = "acme_trainerkit" in sys.modules
        manager = trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"partner": {"type": "ACME", "config": {"region": "us"}}}}})
        trainer = manager.get_trainer("partner")
        print(json.dumps({"before": before, "after": "acme_trainerkit" in sys.modules,
                          "region": trainer.region, "class": type(trainer).__name__,
                          "source": str(manager.type_source("partner"))}))
        """,
        installed_plugin,
    )
    assert result == {
        "before": False,
        "after": True,
        "region": "us",
        "class": "AcmeTrainer",
        "source": "entry point (acme-trainerkit 1.2.3)",
    }


def test_entry_point_type_config_is_validated_with_its_own_schema(installed_plugin):
    script = (
        f"import sys; sys.path.insert(0, {str(installed_plugin)!r})\n"
        "import trainerkit\n"
        "trainerkit.TrainerManager.from_dict({'model_management': {'trainers': "
        "{'partner': {'type': 'ACME', 'config': {'regoin': 'us'}}}}})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "model_management.trainers.partner.config.regoin: unknown key" in done.stderr
    assert "did you mean 'region'" in done.stderr


def test_two_distributions_claiming_one_type_fail_clearly(installed_plugin, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    dist = other / "rival-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rival\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[trainerkit.trainers]\nACME = rival:Trainer\n")
    script = (
        f"import sys; sys.path[:0] = [{str(installed_plugin)!r}, {str(other)!r}]\n"
        "import trainerkit\n"
        "trainerkit.TrainerManager.from_dict({'model_management': {'trainers': {'p': {'type': 'ACME'}}}})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "claimed by more than one entry point" in done.stderr
    assert "acme-trainerkit" in done.stderr and "rival" in done.stderr


class CustomTrainer(LocalModelTrainer):
    name = "CUSTOM_FOR_TEST"


class Impostor(LocalModelTrainer):
    name = "CUSTOM_FOR_TEST"


def test_import_class_registers_the_class_as_in_caikit(isolated_registry):
    manager = trainerkit.TrainerManager.from_dict(
        {"model_management": {"trainers": {"mine": {
            "type": "CUSTOM_FOR_TEST",
            "import_class": "tests.test_registry.CustomTrainer",
            "config": {"max_workers": 2},
        }}}}
    )
    trainer = manager.get_trainer("mine")
    assert type(trainer) is CustomTrainer
    assert str(manager.type_source("mine")) == "import_class (tests.test_registry.CustomTrainer)"
    assert "CUSTOM_FOR_TEST" in registry.available_types()


def test_a_conflicting_registration_fails_naming_both_classes(isolated_registry):
    registry.register_trainer_type(CustomTrainer)
    registry.register_trainer_type(CustomTrainer)  # same class again: harmless
    with pytest.raises(ConfigError, match="already registered.*CustomTrainer.*Impostor"):
        registry.register_trainer_type(Impostor)


def test_a_builtin_name_cannot_be_taken():
    class FakeLocal(LocalModelTrainer):
        name = "LOCAL"

    with pytest.raises(ConfigError, match="built-in type"):
        registry.register_trainer_type(FakeLocal)


def test_import_class_that_cannot_be_imported_is_named():
    with pytest.raises(ConfigError, match=r"trainers\.mine\.import_class: cannot import 'nowhere\.Thing'"):
        trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"mine": {"type": "X", "import_class": "nowhere.Thing"}}}}
        )


def test_import_class_that_is_not_a_trainer_is_refused():
    with pytest.raises(ConfigError, match="not a trainer class"):
        trainerkit.TrainerManager.from_dict(
            {"model_management": {"trainers": {"mine": {"type": "X", "import_class": "collections.OrderedDict"}}}}
        )


def test_import_trainerkit_does_not_import_kubernetes_or_trainer_backends():
    code = (
        "import sys, trainerkit; m = trainerkit.TrainerManager(); m.get_trainer('default');"
        "print(sorted(n for n in sys.modules if n == 'kubernetes' or n.startswith('trainerkit.trainers.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['trainerkit.trainers.local']"
