"""The `recsys` command line on the user's own files."""

import pytest

from recsys.bundle import current_version, open_current
from recsys.cli import main
from tests.conftest import shop_config


def test_nightly_on_own_parquet_files_publishes(tmp_path, shop_dir, capsys):
    config = shop_config(tmp_path, shop_dir)
    toml = tmp_path / "recsys.toml"
    toml.write_text("[als]\nfactors = 16\niterations = 5\n")
    code = main(
        [
            "nightly",
            "--config",
            str(toml),
            "--data",
            str(shop_dir),
            "--artifacts",
            config.artifacts.root,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "published as current" in out and '"recall@20"' in out
    _, manifest = open_current(config.artifacts.root)
    assert manifest.config["data"]["source"] == str(shop_dir)
    assert manifest.metrics["dataset"] == shop_dir.name


def test_bad_data_fails_clearly_and_publishes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.csv").write_text(
        "item_id,categories,price,stock,regions,created_at,title\ni1,a,1,1,*,0,t\n"
    )
    (data / "events.csv").write_text("user_id,item_id,event_type,value,timestamp\nu1,i1,like,1,5\n")
    artifacts = tmp_path / "artifacts"
    code = main(["nightly", "--data", str(data), "--artifacts", str(artifacts)])
    err = capsys.readouterr().err
    assert code == 1
    assert "events.csv: row 1 (line 2), column 'event_type': unknown event type 'like'" in err
    assert current_version(artifacts) is None


def test_bad_config_is_exit_code_2(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("[serving]\nmax_k = -1\n")
    assert main(["nightly", "--config", str(toml)]) == 2
    assert "'max_k' must be positive" in capsys.readouterr().err


def test_client_against_no_server_fails_with_status(capsys):
    code = main(["health", "--host", "127.0.0.1", "--port", "1"])
    assert code == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["recommend", "--user", "1"], ["similar", "--item", "1"]])
def test_client_commands_parse(command):
    from recsys.cli import _parser

    assert callable(_parser().parse_args(command).run)
