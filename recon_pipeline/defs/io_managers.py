"""The IO manager: every asset's DataFrame, per day, in the membership database's own tables."""

from __future__ import annotations

import dagster as dg
import pandas as pd
from pydantic import ConfigDict, Field

from recon_pipeline.clients.frame_store import FrameNotStoredError, read_frame, write_frame
from recon_pipeline.defs.resources import open_engine

LATEST = "latest"


class FrameStoreIOManager(dg.ConfigurableIOManager):
    """Stores each partition of each asset in `recon_pipeline_frame_<asset>` (see frame_store).

    Loading a day that was never stored fails with a message naming the day, rather than
    handing downstream an empty frame that would read as "no drift".
    """

    model_config = ConfigDict(hide_input_in_errors=True)
    database_url: str = Field(description="DATABASE_URL", repr=False)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        name = context.asset_key.path[-1]
        # An unpartitioned asset (the verification report) keeps its latest value.
        [key] = context.asset_partition_keys if context.has_asset_partitions else [LATEST]
        engine = open_engine(self.database_url)
        try:
            with engine.begin() as conn:
                write_frame(conn, name, key, obj, run_id=context.run_id)
        finally:
            engine.dispose()

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        name = context.asset_key.path[-1]
        engine = open_engine(self.database_url)
        try:
            with engine.connect() as conn:
                keys = context.asset_partition_keys if context.has_asset_partitions else [LATEST]
                return read_frame(conn, name, keys)
        except FrameNotStoredError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        finally:
            engine.dispose()
