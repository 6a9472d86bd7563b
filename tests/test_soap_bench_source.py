"""The SOAP benchmark's source: the stand-in hub in its own process, and what one benchmark record holds."""

from __future__ import annotations

from bench._soap import PACKETS_PER_RECORD, soap_bench_source
from connectors.soap import SoapConnector, clear_wsdl_cache
from tests._soap_helpers import context


def test_bench_hub_runs_in_a_child_process_and_each_record_carries_the_counted_packets() -> None:
    clear_wsdl_cache()
    with soap_bench_source(7) as config:
        connector = SoapConnector(name="bench", config=config, context=context())
        try:
            records = [r for page in connector.read("documents", None) for r in page.records]
        finally:
            connector.close()
    assert len(records) == 7
    for record in records:  # packets_per_s = records_per_s * PACKETS_PER_RECORD must be what was read
        assert record.payload["document"]["kind"] == "document"
        assert 1 + len(record.payload["statuses"]) == PACKETS_PER_RECORD
    clear_wsdl_cache()
