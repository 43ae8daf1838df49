"""One name rule (index/schema.py) for user metadata columns and for the analysis results that become
column and file names: probes, cluster runs, the web atlas's cohorts."""

from __future__ import annotations

import pytest

from ecg_atlas.analysis.store_io import check_name, cluster_columns
from ecg_atlas.errors import AtlasError, MetadataError
from ecg_atlas.index.schema import MAX_NAME_LENGTH, MAX_RESULT_NAME_LENGTH, check_metadata_name, name_rule
from ecg_atlas.web.api import COHORT_NAME


def test_metadata_column_names_follow_the_rule_up_to_its_length():
    assert check_metadata_name("a" * MAX_NAME_LENGTH) == "a" * MAX_NAME_LENGTH
    for bad in ("a" * (MAX_NAME_LENGTH + 1), "1abc", "Age", "a-b", "", "a b"):
        with pytest.raises(MetadataError, match=f"at most {MAX_NAME_LENGTH} characters"):
            check_metadata_name(bad)


def test_result_names_follow_the_same_rule_at_their_own_length():
    longest = "r" * MAX_RESULT_NAME_LENGTH
    assert check_name(longest, "probe") == longest and COHORT_NAME.match(longest)
    for bad in (longest + "r", "1abc", "Probe", "a-b"):
        with pytest.raises(AtlasError, match=f"at most {MAX_RESULT_NAME_LENGTH} characters"):
            check_name(bad, "probe")
        assert not COHORT_NAME.match(bad)
    assert name_rule(3).match("abc") and not name_rule(3).match("abcd")


def test_the_columns_a_result_writes_are_legal_column_names():
    """A cluster run's and a cohort's columns are its name with a prefix and suffix: the longest
    result name must still give legal column names."""
    longest = "r" * MAX_RESULT_NAME_LENGTH
    for column in (*cluster_columns(longest), f"cohort_{longest}"):
        assert check_metadata_name(column) == column
