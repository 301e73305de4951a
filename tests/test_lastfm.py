"""Last.fm-2K (HetRec 2011) from the real files: the tag assignments with the published user
filter give the figures PFedRec and GPFedRec report, the held-out items are each user's latest
by date, and the listening-count file is the other choice. Expectations are plain pandas."""

import pandas as pd
import pytest

from fedca.cli import main
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data

PUBLISHED = (1600, 12454, 185650)   # users, items, interactions in the PFedRec and GPFedRec papers


@pytest.fixture(scope="module")
def tags(real_data_env) -> pd.DataFrame:
    return pd.read_csv(real_data_env / "lastfm-2k" / "user_taggedartists.dat", sep="\t")


@pytest.fixture(scope="module")
def lastfm(real_data_env):
    cfg = compose_run_config(["dataset=lastfm2k"])
    return load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, use_cache=False)


def test_users_with_five_tag_assignments_give_the_published_figures(lastfm, tags):
    kept = tags[tags.groupby("userID")["artistID"].transform("size") >= 5]
    assert (kept["userID"].nunique(), kept["artistID"].nunique(), len(kept)) == PUBLISHED
    assert (lastfm.num_users, lastfm.num_items, lastfm.num_interactions) == PUBLISHED


def test_held_out_items_are_each_users_latest_assignments_by_date_then_file_order(lastfm, tags):
    kept = tags[tags.groupby("userID")["artistID"].transform("size") >= 5].copy()
    kept["date"] = pd.to_datetime(kept[["year", "month", "day"]])
    kept["line"] = range(len(kept))
    ordered = kept.sort_values(["userID", "date", "line"], kind="stable").groupby("userID")
    test = ordered.nth(-1).set_index("userID")["artistID"]
    val = ordered.nth(-2).set_index("userID")["artistID"]
    users = lastfm.raw_user_ids.numpy()
    assert (lastfm.raw_item_ids[lastfm.test_items].numpy() == test.loc[users].to_numpy()).all()
    assert (lastfm.raw_item_ids[lastfm.val_items].numpy() == val.loc[users].to_numpy()).all()


def test_data_stats_prints_the_published_figures(real_data_env, fedca_cache, capsys):
    assert main(["data", "stats", "lastfm2k"]) == 0
    stats = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert (int(stats["users"]), int(stats["items"]), int(stats["interactions"])) == PUBLISHED
    assert "min_interactions 5" in stats["dataset"]


def test_the_listening_count_file_is_the_other_choice(real_data_env):
    cfg = compose_run_config(["dataset=lastfm2k_listens"])
    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, use_cache=False)
    listens = pd.read_csv(real_data_env / "lastfm-2k" / "user_artists.dat", sep="\t")
    kept = listens[listens["weight"] > 0]
    kept = kept[kept.groupby("userID")["artistID"].transform("size") >= cfg.protocol.min_interactions]
    assert (data.num_users, data.num_items, data.num_interactions) \
        == (kept["userID"].nunique(), kept["artistID"].nunique(), len(kept))
    last = kept.groupby("userID")["artistID"].last()   # no time: file order, sorted by artist id
    assert (data.raw_item_ids[data.test_items].numpy() == last.loc[data.raw_user_ids.numpy()].to_numpy()).all()


def test_the_protocol_filter_applies_when_the_dataset_filter_is_unset(real_data_env, tags):
    cfg = compose_run_config(["dataset=lastfm2k", "dataset.min_interactions=null"])
    assert cfg.protocol.min_interactions == 10
    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, use_cache=False)
    kept = tags[tags.groupby("userID")["artistID"].transform("size") >= 10]
    assert (data.num_users, data.num_items, data.num_interactions) \
        == (kept["userID"].nunique(), kept["artistID"].nunique(), len(kept))


def test_a_two_round_run_records_the_dataset_filter_as_the_protocol_in_force(real_data_env, fedca_cache, tmp_path):
    from fedca.run import run

    summary = run(compose_run_config(["dataset=lastfm2k", "agg=fedavg", "rounds=2", "local_epochs=1",
                                      "progress=false"]), tmp_path)
    assert (summary["num_users"], summary["num_items"]) == PUBLISHED[:2]
    assert summary["protocol"]["min_interactions"] == 5
    assert summary["selected"]["round"] in (1, 2) and 0 <= summary["selected"]["test"]["hr@10"] <= 1
