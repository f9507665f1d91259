"""Every data-contract rule, each with a small hand-made frame."""

import numpy as np
import pandas as pd
import pytest

from clm_helpers.data import SCHEMAS, SchemaError, check_references, validate_table


def tx(**overrides):
    df = pd.DataFrame(
        {
            "customer_id": ["C1", "C1", "C2"],
            "timestamp": ["2024-01-05", "2024-02-01 10:30:00", "2024-01-07"],
            "amount": ["10.5", "20", "7.25"],
            "transaction_id": ["T1", "T2", "T3"],
        }
    )
    for k, v in overrides.items():
        df[k] = v
    return df


def surveys(scores, kinds=None):
    n = len(scores)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "timestamp": ["2024-03-01"] * n,
            "survey": kinds or ["nps"] * n,
            "score": scores,
            "response_id": [f"R{i}" for i in range(n)],
        }
    )


def test_valid_text_input_is_parsed_to_contract_types():
    clean, notes = validate_table("transactions", tx())
    assert list(clean.columns) == ["customer_id", "timestamp", "amount", "transaction_id"]
    assert clean["timestamp"].dtype == "datetime64[us]"
    assert clean["amount"].tolist() == [10.5, 20.0, 7.25]
    assert clean["timestamp"].iloc[1] == pd.Timestamp("2024-02-01 10:30")
    assert notes == []


def test_input_frame_is_not_modified():
    raw = tx()
    before = raw.copy()
    validate_table("transactions", raw)
    pd.testing.assert_frame_equal(raw, before)


def test_identifiers_stay_text_with_leading_zeros():
    clean, _ = validate_table("transactions", tx(customer_id=["00042", "00042", "7"]))
    assert clean["customer_id"].tolist() == ["00042", "00042", "7"]


def test_integer_identifiers_become_text_without_decimal_point():
    clean, _ = validate_table("transactions", tx(customer_id=[1.0, 1.0, 2.0]))
    assert clean["customer_id"].tolist() == ["1", "1", "2"]


def test_missing_required_column_names_table_column_and_what_is_there():
    with pytest.raises(SchemaError, match=r"transactions: missing required column\(s\) \['amount'\]; the source has \['customer_id', 'timestamp', 'transaction_id'\]"):
        validate_table("transactions", tx().drop(columns="amount"))


def test_mapping_renames_user_columns_onto_the_contract():
    clean, _ = validate_table("transactions", tx().rename(columns={"amount": "order_value"}), mapping={"order_value": "amount"})
    assert clean["amount"].sum() == pytest.approx(37.75)


def test_mapping_onto_a_non_contract_column_is_refused():
    with pytest.raises(SchemaError, match=r"transactions: the column mapping targets \['price'\], which are not contract columns"):
        validate_table("transactions", tx(), mapping={"amount": "price"})


def test_mapping_from_a_column_the_source_lacks_is_refused():
    with pytest.raises(SchemaError, match=r"the column mapping names \['value'\], which the source does not have"):
        validate_table("transactions", tx(), mapping={"value": "amount"})


def test_extra_columns_are_left_out_and_noted():
    clean, notes = validate_table("transactions", tx(coupon=["a", "b", "c"]))
    assert "coupon" not in clean.columns
    assert notes == ["transactions: ignored 1 column(s) outside the contract: coupon"]


def test_unparseable_date_names_count_and_example_rows():
    with pytest.raises(SchemaError, match=r"transactions.timestamp: 2 of 3 rows are not ISO 8601 dates .*row 1 \(transaction_id 'T1'\): 'yesterday'; row 3 \(transaction_id 'T3'\): '05/01/2024 13h'"):
        validate_table("transactions", tx(timestamp=["yesterday", "2024-01-01", "05/01/2024 13h"]))


def test_unparseable_number_names_count_and_examples():
    with pytest.raises(SchemaError, match=r"transactions.amount: 1 of 3 rows are not numbers \(e.g. row 2 \(transaction_id 'T2'\): '12,50'\)"):
        validate_table("transactions", tx(amount=["1", "12,50", "3"]))


def test_infinite_amount_is_refused():
    with pytest.raises(SchemaError, match=r"transactions.amount: 1 of 3 rows are infinite"):
        validate_table("transactions", tx(amount=[1.0, np.inf, 2.0]))


def test_null_customer_id_is_refused():
    with pytest.raises(SchemaError, match=r"transactions.customer_id: 1 of 3 rows have no identifier"):
        validate_table("transactions", tx(customer_id=["C1", None, "C2"]))


def test_blank_customer_id_is_refused():
    with pytest.raises(SchemaError, match=r"transactions.customer_id: 1 of 3 rows have no identifier"):
        validate_table("transactions", tx(customer_id=["C1", "  ", "C2"]))


def test_duplicate_transaction_id_is_refused_with_both_rows():
    with pytest.raises(SchemaError, match=r"transactions.transaction_id: 2 of 3 rows share an identifier .*row 1 .*'T1'.*row 3 .*'T1'"):
        validate_table("transactions", tx(transaction_id=["T1", "T2", "T1"]))


def test_duplicate_customer_in_customers_is_refused():
    customers = pd.DataFrame({"customer_id": ["A", "B", "A"], "signup_date": ["2024-01-01"] * 3})
    with pytest.raises(SchemaError, match=r"customers.customer_id: 2 of 3 rows share an identifier"):
        validate_table("customers", customers)


def test_nps_score_outside_0_10_is_refused():
    with pytest.raises(SchemaError, match=r"surveys.score: 2 of 4 rows are nps answers outside the whole numbers 0-10 .*11\.0.*-1\.0"):
        validate_table("surveys", surveys([10, 11, -1, 5]))


def test_fractional_score_is_refused():
    with pytest.raises(SchemaError, match=r"surveys.score: 1 of 2 rows are csat answers outside the whole numbers 1-5"):
        validate_table("surveys", surveys([4.5, 5], kinds=["csat", "csat"]))


def test_score_as_text_is_refused():
    with pytest.raises(SchemaError, match=r"surveys.score: 1 of 2 rows are not numbers \(e.g. row 1 \(response_id 'R0'\): '10 - extremely likely'\)"):
        validate_table("surveys", surveys(["10 - extremely likely", "9"]))


def test_scale_depends_on_the_survey():
    clean, _ = validate_table("surveys", surveys([7, 0, 5], kinds=["ces", "nps", "csat"]))
    assert clean["score"].tolist() == [7, 0, 5]
    with pytest.raises(SchemaError, match=r"ces answers outside the whole numbers 1-7"):
        validate_table("surveys", surveys([0], kinds=["ces"]))


def test_missing_scores_are_kept_and_counted():
    clean, notes = validate_table("surveys", surveys([9, None, 3]))
    assert clean["score"].isna().sum() == 1
    assert "surveys: 1 answers have no score (kept; metrics exclude and count them)" in notes


def test_unknown_survey_type_lists_allowed_values():
    with pytest.raises(SchemaError, match=r"surveys.survey: 1 of 2 rows have a value outside \['nps', 'csat', 'ces'\]: 'ces2' \(1\)"):
        validate_table("surveys", surveys([1, 2], kinds=["nps", "ces2"]))


def test_survey_type_is_case_insensitive():
    clean, _ = validate_table("surveys", surveys([1], kinds=[" NPS "]))
    assert clean["survey"].tolist() == ["nps"]


def test_email_event_outside_allowed_set_is_refused():
    events = pd.DataFrame({"campaign_id": ["E1"] * 3, "customer_id": ["C1"] * 3, "event": ["sent", "opened", "opened"], "timestamp": ["2024-01-01"] * 3})
    with pytest.raises(SchemaError, match=r"email_events.event: 2 of 3 rows have a value outside \[.*'sent', 'delivered'.*\]: 'opened' \(2\)"):
        validate_table("email_events", events)


def test_negative_spend_is_refused():
    spend = pd.DataFrame({"date": ["2024-01-01", "2024-01-02"], "channel": ["search", "search"], "spend": [10, -5]})
    with pytest.raises(SchemaError, match=r"marketing_spend.spend: 1 of 2 rows are below the minimum 0"):
        validate_table("marketing_spend", spend)


def test_refunds_and_zero_amounts_are_kept_and_counted():
    clean, notes = validate_table("transactions", tx(amount=[10, -4, 0]))
    assert len(clean) == 3
    assert notes == [
        "transactions: 1 refunds (negative amounts) kept; they are not purchases",
        "transactions: 1 zero-amount orders kept as purchases",
    ]


def test_time_zones_are_converted_to_utc_and_naive_taken_as_utc():
    clean, _ = validate_table("transactions", tx(timestamp=["2024-01-01T10:00:00+02:00", "2024-01-01T10:00:00Z", "2024-01-01 10:00"]))
    assert clean["timestamp"].tolist() == [pd.Timestamp("2024-01-01 08:00"), pd.Timestamp("2024-01-01 10:00"), pd.Timestamp("2024-01-01 10:00")]


def test_tz_aware_datetime_column_is_converted_to_naive_utc():
    ts = pd.Series(pd.to_datetime(["2024-06-01 12:00"] * 3)).dt.tz_localize("Europe/Berlin")
    clean, _ = validate_table("transactions", tx(timestamp=ts))
    assert clean["timestamp"].iloc[0] == pd.Timestamp("2024-06-01 10:00")


def test_dates_are_midnight():
    customers = pd.DataFrame({"customer_id": ["A"], "signup_date": ["2024-01-01 15:30"]})
    clean, _ = validate_table("customers", customers)
    assert clean["signup_date"].iloc[0] == pd.Timestamp("2024-01-01")


def test_subscription_ending_before_it_starts_is_refused():
    subs = pd.DataFrame({"customer_id": ["A", "B"], "start_date": ["2024-02-01", "2024-02-01"], "end_date": ["2024-01-01", None]})
    with pytest.raises(SchemaError, match=r"subscriptions.end_date: 1 of 2 rows end before they start"):
        validate_table("subscriptions", subs)


def test_unknown_table_is_refused():
    with pytest.raises(SchemaError, match=r"table must be one of \['customers', 'transactions'"):
        validate_table("orders", tx())


def test_references_count_unknown_customers_and_orders_before_signup():
    customers, _ = validate_table("customers", pd.DataFrame({"customer_id": ["C1"], "signup_date": ["2024-01-10"]}))
    transactions, _ = validate_table("transactions", tx())
    notes = check_references({"customers": customers, "transactions": transactions})
    assert notes == [
        "transactions: 1 of 3 rows name a customer_id not in customers (e.g. 'C2'); kept",
        "transactions: 1 rows are dated before the customer's signup_date; kept",
    ]


def test_every_table_has_a_schema_with_a_time_column_and_meanings():
    assert list(SCHEMAS) == ["customers", "transactions", "marketing_spend", "email_events", "product_events", "surveys", "subscriptions"]
    for schema in SCHEMAS.values():
        assert schema.time_column in schema.required
        assert all(c.description for c in schema.columns)
        assert len(schema.describe()) == len(schema.columns)


def test_future_and_placeholder_dates_are_kept_and_counted():
    clean, notes = validate_table("transactions", tx(timestamp=["2200-01-01", "1900-01-01", "2024-01-01"]))
    assert len(clean) == 3
    assert "transactions.timestamp: 1 rows are dated after today; kept (check the export's clock or time zone)" in notes
    assert "transactions.timestamp: 1 rows are dated before 1970-01-01 (placeholder dates?); kept" in notes


def test_exact_duplicate_rows_are_kept_and_counted():
    raw = tx().drop(columns="transaction_id")
    clean, notes = validate_table("transactions", pd.concat([raw, raw.iloc[[0]]]))
    assert len(clean) == 4
    assert notes == ["transactions: 1 rows repeat another row exactly; kept (check the export was not loaded twice)"]


def test_an_empty_table_is_valid_and_keeps_its_columns():
    clean, notes = validate_table("transactions", tx().iloc[:0])
    assert clean.empty and list(clean.columns) == ["customer_id", "timestamp", "amount", "transaction_id"]
