"""The Lambda asset's CDK code: stacks/asset.py bundled locally (never in Docker), under a hash of its sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from stacks.asset import FUNCTIONS, asset_hash, bundle


@jsii.implements(ILocalBundling)
class _LocalBundling:
    def __init__(self, with_dependencies: bool) -> None:
        self.with_dependencies = with_dependencies

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        bundle(Path(output_dir), self.with_dependencies)
        return True


def lambda_code(with_dependencies: bool) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(FUNCTIONS),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=asset_hash(with_dependencies),
        bundling=BundlingOptions(
            # Only used if local bundling declined, which it never does; kept because CDK requires an image.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
            local=_LocalBundling(with_dependencies),
        ),
    )
