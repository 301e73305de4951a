"""Each official ratings format, and the generic csv dataset, parsed from a small file in tmp_path
through the dataset configs in conf/dataset/."""

import gzip

import numpy as np
import pandas as pd
import pytest

from fedca.config.compose import compose_run_config
from fedca.config.schema import DatasetConfig
from fedca.data.fed_data import load_fed_data
from fedca.data.readers import read_ratings
from fedca.data.sources import dataset_path
from fedca.errors import FedcaError


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def read(tmp_path, dataset: str, *overrides: str) -> pd.DataFrame:
    cfg = compose_run_config([f"dataset={dataset}", f"dataset.root={tmp_path}", *overrides])
    return read_ratings(dataset_path(cfg.dataset), cfg.dataset)


def frame(user, item, rating, time) -> pd.DataFrame:
    """The reader's output for rows in file order: int64 ids/time/pos, float64 rating."""
    return pd.DataFrame({
        "user": np.asarray(user, dtype=np.int64), "item": np.asarray(item, dtype=np.int64),
        "rating": np.asarray(rating, dtype=np.float64), "time": np.asarray(time, dtype=np.int64),
        "pos": np.arange(len(user), dtype=np.int64),
    })


ML100K_ROWS = [("196", "242", "3", "881250949"), ("186", "302", "3", "891717742"), ("22", "377", "1", "878887116")]
ML100K_FRAME = frame([196, 186, 22], [242, 302, 377], [3, 3, 1], [881250949, 891717742, 878887116])


@pytest.mark.parametrize("sep", ["\t", ","], ids=["tab", "comma"])
def test_ml100k_reads_tab_and_comma_separated_u_data(tmp_path, sep):
    write(tmp_path / "ml-100k" / "u.data", "".join(sep.join(row) + "\n" for row in ML100K_ROWS))

    parsed = read(tmp_path, "ml100k")

    pd.testing.assert_frame_equal(parsed, ML100K_FRAME)


def test_ml1m_reads_double_colon_separated_ratings_dat(tmp_path):
    write(tmp_path / "ml-1m" / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1357::4::978298709\n")

    parsed = read(tmp_path, "ml1m")

    pd.testing.assert_frame_equal(parsed, frame([1, 1, 2], [1193, 661, 1357], [5, 3, 4],
                                                 [978300760, 978302109, 978298709]))


def test_filmtrust_time_is_the_position_where_the_item_first_appears(tmp_path):
    write(tmp_path / "filmtrust" / "ratings.txt", "1 1 2\n1 2 4\n2 2 3.5\n2 3 0.5\n3 1 4\n")

    parsed = read(tmp_path, "filmtrust")

    pd.testing.assert_frame_equal(parsed, frame([1, 1, 2, 2, 3], [1, 2, 2, 3, 1], [2, 4, 3.5, 0.5, 4],
                                                [0, 1, 1, 3, 0]))


def test_microlens_reads_header_columns_and_millisecond_timestamps(tmp_path):
    write(tmp_path / "microlens-100k" / "MicroLens-100k_pairs.csv",
          "user,item,timestamp\n10,5,1600000000123\n11,5,1600000000456\n10,7,1599999999999\n")

    parsed = read(tmp_path, "microlens")

    pd.testing.assert_frame_equal(parsed, frame([10, 11, 10], [5, 5, 7], [1, 1, 1],
                                                [1600000000123, 1600000000456, 1599999999999]))


def test_csv_without_rating_or_timestamp_uses_file_order_and_implicit_ratings(tmp_path):
    write(tmp_path / "pairs.csv", "5,9\n5,3\n6,9\n")

    parsed = read(tmp_path, "csv", "dataset.file=pairs.csv")

    pd.testing.assert_frame_equal(parsed, frame([5, 5, 6], [9, 3, 9], [1, 1, 1], [0, 1, 2]))


def test_csv_takes_columns_by_position_with_a_custom_separator(tmp_path):
    write(tmp_path / "ratings.txt", "9;5;4.5\n3;5;2\n9;6;1\n")

    parsed = read(tmp_path, "csv", "dataset.file=ratings.txt", "dataset.sep=';'", "dataset.user_col=1",
                  "dataset.item_col=0", "dataset.rating_col=2")

    pd.testing.assert_frame_equal(parsed, frame([5, 5, 6], [9, 3, 9], [4.5, 2, 1], [0, 1, 2]))


def test_gzipped_csv_takes_columns_by_header_name(tmp_path):
    with gzip.open(tmp_path / "ratings.csv.gz", "wt") as handle:
        handle.write("ts,item_id,score,user_id\n300,9,4.5,5\n100,3,2,5\n200,9,1,6\n")

    parsed = read(tmp_path, "csv", "dataset.file=ratings.csv.gz", "dataset.header=true", "dataset.user_col=user_id",
                  "dataset.item_col=item_id", "dataset.rating_col=score", "dataset.timestamp_col=ts",
                  "dataset.time_rule=column")

    pd.testing.assert_frame_equal(parsed, frame([5, 5, 6], [9, 3, 9], [4.5, 2, 1], [300, 100, 200]))


def test_filmtrust_split_holds_out_the_items_that_appeared_latest_in_the_file(tmp_path, fedca_cache):
    # user 1 rates item 3 last in the file, but item 3 first appeared (user 2) before item 4
    write(tmp_path / "filmtrust" / "ratings.txt",
          "1 1 3\n1 2 3\n2 3 3\n1 4 3\n2 1 3\n2 5 3\n1 3 3\n3 6 3\n3 7 3\n3 8 3\n")
    cfg = compose_run_config(["dataset=filmtrust", f"dataset.root={tmp_path}", "protocol.min_interactions=3",
                              "protocol.num_eval_negatives=1"])

    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)

    assert data.raw_user_ids.tolist() == [1, 2, 3]
    assert data.raw_item_ids[data.test_items].tolist() == [4, 5, 8]
    assert data.raw_item_ids[data.val_items].tolist() == [3, 3, 7]
    assert data.raw_item_ids[data.train_items].tolist() == [1, 2, 1, 6]
    assert data.train_offsets.tolist() == [0, 2, 3, 4]


def test_csv_split_follows_file_order_without_timestamps(tmp_path, fedca_cache):
    write(tmp_path / "pairs.csv", "7,1\n8,2\n7,3\n8,1\n7,2\n8,4\n7,4\n8,3\n9,5\n9,6\n9,7\n9,8\n")
    cfg = compose_run_config(["dataset=csv", f"dataset.root={tmp_path}", "dataset.file=pairs.csv",
                              "protocol.min_interactions=3", "protocol.num_eval_negatives=1"])

    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)

    assert data.raw_user_ids.tolist() == [7, 8, 9]
    assert data.raw_item_ids[data.test_items].tolist() == [4, 3, 8]
    assert data.raw_item_ids[data.val_items].tolist() == [2, 4, 7]
    assert data.raw_item_ids[data.train_items].tolist() == [1, 3, 2, 1, 5, 6]


@pytest.mark.parametrize("sep", ["tab", "\\t"])
def test_named_and_escaped_tab_separators_read_tab_files(tmp_path, sep):
    path = tmp_path / "ratings.tsv"
    path.write_text("1\t10\n1\t11\n2\t10\n")
    spec = DatasetConfig(name="csv", file=str(path), sep=sep, rating_col=None, timestamp_col=None,
                         time_rule="file_order")
    frame = read_ratings(path, spec)
    assert frame["user"].tolist() == [1, 1, 2] and frame["item"].tolist() == [10, 11, 10]


def test_lastfm2k_time_is_the_assignment_date_and_a_bad_month_names_its_line(tmp_path):
    header = "userID\tartistID\ttagID\tday\tmonth\tyear\r\n"
    write(tmp_path / "lastfm-2k/user_taggedartists.dat",
          header + "2\t52\t13\t1\t4\t2009\r\n2\t53\t13\t31\t12\t2008\r\n3\t52\t7\t2\t4\t2009\r\n")
    got = read(tmp_path, "lastfm2k")
    expected = frame([2, 2, 3], [52, 53, 52], [1.0, 1.0, 1.0], [20090401, 20081231, 20090402])
    pd.testing.assert_frame_equal(got, expected)
    write(tmp_path / "lastfm-2k/user_taggedartists.dat", header + "2\t52\t13\t1\t4\t2009\r\n2\t53\t13\t1\t13\t2009\r\n")
    with pytest.raises(FedcaError, match=r"line 3: month '13' is outside 1\.\.12"):
        read(tmp_path, "lastfm2k")
