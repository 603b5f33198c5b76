"""The synthetic seed generator writes the real seeds' format, with churn signal and drift."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from streamflow.ops import generator
from streamflow.ops.generator import TABLE_COLUMNS, generate_seeds

REAL_SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
USERS, MONTHS, SEED = 2_000, 3, 7
# Several chunks, so appending and the per-chunk sign-up id blocks are exercised.
CHUNK = 700
FOLDERS = [f"month_{m:03d}" for m in range(MONTHS)]
BOOLEANS = ("user_is_senior", "has_family", "has_dependents", "paperless_billing", "churn_label")
STREAM_FLAGS = ("plan_stream_tv", "plan_stream_movies")
FLOATS = (
    "monthly_fee",
    "total_paid",
    "watch_hours_30d",
    "avg_session_mins_7d",
    "ticket_avg_resolution_hrs_90d",
)


def read_month(folder: Path) -> pd.DataFrame:
    frames = [pd.read_csv(folder / f, dtype=str, keep_default_na=False) for f in TABLE_COLUMNS]
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.merge(frame, on="user_id", how="outer", validate="one_to_one")
    return merged


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seeds")
    generate_seeds(out, USERS, MONTHS, SEED, chunk_size=CHUNK)
    return out


@pytest.fixture(scope="module")
def months(seeds: Path) -> list[pd.DataFrame]:
    return [read_month(seeds / folder) for folder in FOLDERS]


def test_layout_is_month_folders_of_six_csvs(seeds: Path) -> None:
    assert sorted(p.name for p in seeds.iterdir()) == FOLDERS
    for folder in FOLDERS:
        assert sorted(p.name for p in (seeds / folder).iterdir()) == sorted(TABLE_COLUMNS)


def test_headers_written_once_in_generator_order(seeds: Path) -> None:
    for folder in FOLDERS:
        for file, columns in TABLE_COLUMNS.items():
            lines = (seeds / folder / file).read_text().splitlines()
            assert lines[0] == ",".join(columns)
            assert sum(line.startswith("user_id") for line in lines) == 1


def test_headers_match_real_seeds(seeds: Path) -> None:
    if not REAL_SEEDS.is_dir():
        pytest.skip(f"real seeds not available at {REAL_SEEDS} (fresh machine)")
    real_folders = sorted(p.name for p in REAL_SEEDS.iterdir() if p.is_dir())
    for folder in real_folders:
        assert sorted(p.name for p in (REAL_SEEDS / folder).iterdir()) == sorted(TABLE_COLUMNS)
        for file in TABLE_COLUMNS:
            real_header = (REAL_SEEDS / folder / file).read_text().splitlines()[0]
            ours = (seeds / "month_000" / file).read_text().splitlines()[0]
            assert ours == real_header, file


def test_first_month_has_exactly_the_requested_users(months: list[pd.DataFrame]) -> None:
    assert len(months[0]) == USERS


def test_every_user_is_in_all_six_files(seeds: Path) -> None:
    for folder in FOLDERS:
        ids = [
            pd.read_csv(seeds / folder / file, dtype=str)["user_id"].tolist()
            for file in TABLE_COLUMNS
        ]
        assert all(column == ids[0] for column in ids)


def test_user_ids_are_unique_and_shaped_like_the_real_ones(months: list[pd.DataFrame]) -> None:
    for month in months:
        assert month["user_id"].is_unique
        assert month["user_id"].str.fullmatch(r"\d{4}-[A-Z]{5}").all()


def test_booleans_are_capitalised_text(months: list[pd.DataFrame]) -> None:
    for month in months:
        for column in BOOLEANS:
            assert set(month[column]) == {"True", "False"}, column
        for column in STREAM_FLAGS:
            assert set(month[column]) == {"True", "False", ""}, column


def test_stream_flags_empty_exactly_without_internet(months: list[pd.DataFrame]) -> None:
    for month in months:
        no_internet = month["net_service"].eq("No")
        for column in STREAM_FLAGS:
            assert (month[column].eq("") == no_internet).all(), column


def test_categories_are_the_real_sets(months: list[pd.DataFrame]) -> None:
    for month in months:
        assert set(month["user_gender"]) == {"Female", "Male"}
        assert set(month["contract_type"]) == {"Month-to-month", "One year", "Two year"}
        assert set(month["net_service"]) == {"DSL", "Fiber optic", "No"}


def test_numbers_are_formatted_like_the_real_files(months: list[pd.DataFrame]) -> None:
    for month in months:
        for column in ("monthly_fee", "total_paid"):
            assert month[column].str.fullmatch(r"\d+\.\d{1,2}").all(), column
        assert month["ticket_avg_resolution_hrs_90d"].str.fullmatch(r"\d+\.\d").all()
        for column in ("watch_hours_30d", "avg_session_mins_7d"):
            assert month[column].str.fullmatch(r"\d+\.\d+").all(), column
        # The real files hold exactly Python's repr of each float (what pandas writes).
        for column in FLOATS:
            assert all(repr(float(text)) == text for text in month[column]), column
        counts = (
            "months_active",
            "unique_devices_30d",
            "skips_7d",
            "rebuffer_events_7d",
            "failed_payments_90d",
            "support_tickets_90d",
        )
        for column in counts:
            assert month[column].str.fullmatch(r"\d+").all(), column
        assert pd.to_numeric(month["months_active"]).between(0, 100).all()


def test_signup_dates_are_iso_and_not_after_the_month(months: list[pd.DataFrame]) -> None:
    for index, month in enumerate(months):
        assert month["signup_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
        month_end = pd.Timestamp(2024, 1 + index, 1) + pd.offsets.MonthEnd(0)
        assert pd.to_datetime(month["signup_date"]).max() <= month_end


def test_same_seed_is_byte_identical_and_another_seed_differs(seeds: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    generate_seeds(again, USERS, MONTHS, SEED, chunk_size=CHUNK)
    generate_seeds(other, USERS, MONTHS, SEED + 1, chunk_size=CHUNK)
    for folder in FOLDERS:
        for file in TABLE_COLUMNS:
            ours = (seeds / folder / file).read_bytes()
            assert (again / folder / file).read_bytes() == ours
            assert (other / folder / file).read_bytes() != ours


def test_signups_join_and_churners_depart(months: list[pd.DataFrame]) -> None:
    for index, (before, after) in enumerate(zip(months, months[1:], strict=False), start=1):
        gone = set(before["user_id"]) - set(after["user_id"])
        new = set(after["user_id"]) - set(before["user_id"])
        assert gone and new
        # Only users labelled as churners leave.
        assert before.set_index("user_id").loc[sorted(gone), "churn_label"].eq("True").all()
        joined = after[after["user_id"].isin(new)]
        assert set(joined["months_active"]) <= {"0", "1"}
        signup = pd.to_datetime(joined["signup_date"])
        assert (signup.dt.year == 2024).all() and (signup.dt.month == 1 + index).all()


def test_stayers_age_and_pay_one_more_fee(months: list[pd.DataFrame]) -> None:
    before, after = (m.set_index("user_id") for m in months[:2])
    stayers = before.index.intersection(after.index)
    tenure = pd.to_numeric(after.loc[stayers, "months_active"])
    assert (tenure == pd.to_numeric(before.loc[stayers, "months_active"]) + 1).all()
    paid = pd.to_numeric(before.loc[stayers, "total_paid"]) + pd.to_numeric(
        before.loc[stayers, "monthly_fee"]
    )
    assert np.allclose(pd.to_numeric(after.loc[stayers, "total_paid"]), paid)
    assert (after.loc[stayers, "signup_date"] == before.loc[stayers, "signup_date"]).all()


def test_usage_drifts_between_months(months: list[pd.DataFrame]) -> None:
    watch = [pd.to_numeric(m["watch_hours_30d"]).mean() for m in months]
    rebuffer = [pd.to_numeric(m["rebuffer_events_7d"]).mean() for m in months]
    assert watch[0] > watch[1] > watch[2]
    assert rebuffer[0] < rebuffer[2]


def test_churn_rate_is_plausible(months: list[pd.DataFrame]) -> None:
    for month in months:
        assert 0.15 < month["churn_label"].eq("True").mean() < 0.40


def test_a_model_learns_churn_from_the_features(months: list[pd.DataFrame]) -> None:
    month = months[0]
    features = pd.get_dummies(
        month.drop(columns=["user_id", "signup_date", "churn_label"]),
        columns=["user_gender", *BOOLEANS[:-1], *STREAM_FLAGS, "contract_type", "net_service"],
    ).astype(float)
    target = month["churn_label"].eq("True").astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.3, stratify=target, random_state=0
    )
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    auc = roc_auc_score(y_test, model.predict_proba(scaler.transform(x_test))[:, 1])
    assert auc > 0.75


def test_user_id_mapping_is_a_bijection_on_a_large_block() -> None:
    codes = generator._IdPermutation.for_seed(SEED).codes(np.arange(1_000_000))
    assert len(np.unique(codes)) == len(codes)
    assert codes.min() >= 0 and codes.max() < generator.ID_SPACE


def test_a_crash_leaves_no_month_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_tables = generator._tables

    def crash_on_second_chunk(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RuntimeError("disk full")
        return real_tables(*args, **kwargs)

    monkeypatch.setattr(generator, "_tables", crash_on_second_chunk)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_seeds(tmp_path, USERS, 2, SEED, chunk_size=CHUNK)
    assert list(tmp_path.iterdir()) == []


def test_rerun_replaces_months_and_drops_stale_ones(tmp_path: Path) -> None:
    generate_seeds(tmp_path, 300, 3, 1)
    (tmp_path / "notes.txt").write_text("kept")
    summary = generate_seeds(tmp_path, 200, 2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["month_000", "month_001", "notes.txt"]
    assert len((tmp_path / "month_000" / "labels.csv").read_text().splitlines()) == 201
    assert summary.rows_per_month[0] == 200
    assert len(summary.churn_rate_per_month) == 2


@pytest.mark.parametrize(
    ("users", "months", "seed", "message"),
    [(0, 1, 1, "users"), (10, 0, 1, "months"), (10, 1, -1, "seed")],
)
def test_rejects_bad_arguments(
    tmp_path: Path, users: int, months: int, seed: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate_seeds(tmp_path, users, months, seed)
    assert not any(re.match(r"month_\d{3}$", p.name) for p in tmp_path.iterdir())


def test_summary_describes_the_run(tmp_path: Path) -> None:
    summary = generate_seeds(tmp_path, 500, 2, 3)
    assert summary.out_dir == tmp_path
    assert summary.months[0].rows == 500
    assert summary.months[1].signups > 0 and summary.months[1].departures > 0
    assert summary.bytes_written == sum(p.stat().st_size for p in tmp_path.rglob("*.csv"))
    assert "month_001" in str(summary)


def test_the_first_user_is_the_real_seeds_first_so_documented_examples_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamflow.ops.generator import PINNED_CODE, PINNED_ID, _IdPermutation

    generate_seeds(tmp_path / "seeds", users=500, months=1, seed=3)
    with open(tmp_path / "seeds" / "month_000" / "users.csv") as handle:
        ids = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert ids[0] == PINNED_ID
    assert len(set(ids)) == len(ids)
    # The swap keeps the map a bijection even for an index whose own id would be the pinned one.
    permutation = _IdPermutation.for_seed(3)
    scrambled = _IdPermutation._scrambled

    def drawing_the_pinned_id(self, index):
        return np.where(index == 12_345, PINNED_CODE, scrambled(self, index))

    monkeypatch.setattr(_IdPermutation, "_scrambled", drawing_the_pinned_id)
    codes = permutation.codes(np.arange(200_000))
    assert codes[0] == PINNED_CODE
    assert codes[12_345] == scrambled(permutation, np.zeros(1))[0]
    assert len(np.unique(codes)) == len(codes)


def test_the_demo_seeds_catalogue_change_makes_the_last_candidate_win(tmp_path: Path) -> None:
    """`make demo`'s seeds: the model trained on the last month beats the first month's on that
    month's held-out split by more than the promotion margin, as the promotion gate judges it."""
    from datetime import date

    from streamflow.domain.features import to_model_frame
    from streamflow.domain.promotion import Contender, decide
    from streamflow.domain.training import ModelParams, build_pipeline, one_thread, split
    from streamflow.settings import Settings

    generate_seeds(tmp_path, 7043, 3, 42)
    params = ModelParams()

    def month(folder: str) -> tuple[pd.DataFrame, np.ndarray]:
        tables = [pd.read_csv(tmp_path / folder / name) for name in TABLE_COLUMNS]
        rows = tables[0]
        for table in tables[1:]:
            rows = rows.merge(table, on="user_id", validate="one_to_one")
        return to_model_frame(rows), rows["churn_label"].to_numpy(int)

    (x_first, y_first), _, (x_last, y_last) = (month(folder) for folder in FOLDERS)
    with one_thread():
        first_fit, last_fit = (
            build_pipeline(params).fit(x.iloc[train], y[train])
            for x, y in ((x_first, y_first), (x_last, y_last))
            for train in [split(y, params).train]
        )
    held_out = split(y_last, params).val
    champion, candidate = (
        Contender(version, as_of, roc_auc_score(y_last[held_out], probability[:, 1]))
        for version, as_of, probability in (
            ("1", date(2024, 1, 31), first_fit.predict_proba(x_last.iloc[held_out])),
            ("3", date(2024, 3, 31), last_fit.predict_proba(x_last.iloc[held_out])),
        )
    )
    decision = decide(candidate, champion, Settings().promotion_margin)
    assert decision.promote, decision.reason
    # The change shows as drift too: skips_7d, steady before it, jumps.
    assert x_last["skips_7d"].mean() > x_first["skips_7d"].mean() + 1
