"""``hybrid image``: bake a role's AMI, export the web-tier image to Glance, print a recipe's user data."""
from __future__ import annotations

import time
from pathlib import Path

import click

from hybrid.cli.context import Context, pass_context
from hybrid.cli.output import progress
from hybrid.core.naming import ROLE_APP_TIER, ROLE_WEB_TIER

ROLE_CHOICE = click.Choice([ROLE_APP_TIER, ROLE_WEB_TIER])


@click.group("image")
def image() -> None:
    """Machine images: bake the app-tier and web-tier AMIs, export the web tier to OpenStack (Glance).

    \b
    hybrid image bake --role app-tier          # <stack>-app-tier, which `hybrid aws up` then finds
    hybrid image bake --role web-tier
    hybrid image export --role web-tier        # AMI -> VMDK in S3 -> qcow2 -> Glance (openstack.cloud)
    hybrid image user-data --role app-tier     # the cloud-config a builder gets (URL left empty)
    """


@image.command("bake")
@click.option("--role", type=ROLE_CHOICE, required=True, help="which image to bake")
@click.option("--base-ami", default="", help="base Debian/Ubuntu AMI with cloud-init and python3 3.11 (default: "
                                             "aws.ami_id; on the local server its first stock image)")
@click.option("--instance-type", default="", help="builder instance type (default: aws.instance_type; t3.micro on "
                                                  "the local server)")
@click.option("--replace", is_flag=True, help="replace an existing image of the same name")
@pass_context
def bake_command(ctx: Context, role: str, base_ami: str, instance_type: str, replace: bool) -> None:
    """Build the role's wheelhouse from this checkout (its wheel, its dependencies pinned to the versions installed
    here for CPython 3.11, pip, and on the app tier the ONNX model), upload it to <stack>-exports, launch a builder
    that installs from it by a presigned URL (no package index, no apt), wait until its console reports ready,
    create the image <stack>-<role> (tagged hybrid:stack, hybrid:role, hybrid:origin=baked, hybrid:recipe-digest),
    and terminate the builder and delete the upload, whatever happens.

    On AWS an available image of the stack with the same role and recipe digest is reused: nothing is baked.
    On the local AWS server the builder is a real VM (QEMU; about 2.5 minutes per tier under software emulation),
    and a checkout baked before is restored from the image cache (~/.cache/hybrid/images, HYBRID_IMAGE_CACHE).
    """
    from hybrid.machine_images.bake import BakeRequest, bake_image

    started = time.monotonic()
    with progress(f"baking {role}") as on_poll:
        result = bake_image(ctx.settings, BakeRequest(role, base_ami, instance_type, replace),
                            report=click.echo, on_poll=on_poll)
    how = "reused (same recipe digest)" if result.reused else f"baked in {time.monotonic() - started:.0f} s"
    click.echo(f"image {result.name}: {result.image_id}, {how}, recipe digest {result.digest[:16]}")


@image.command("export")
@click.option("--role", type=ROLE_CHOICE, default=ROLE_WEB_TIER, show_default=True, help="which baked image")
@click.option("--image-id", default="", help="export this AMI instead of the stack's <stack>-<role>")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="folder for the downloaded and converted files (default <state_dir>/images)")
@click.option("--keep", is_flag=True, help="keep the exported VMDK in S3 and on disk")
@click.option("--role-name", default="vmimport", show_default=True, help="VM Import/Export service role")
@pass_context
def export_command(ctx: Context, role: str, image_id: str, out_dir: Path | None, keep: bool, role_name: str) -> None:
    """Export the AMI as VMDK into the private bucket <stack>-exports, download and check it, convert it to
    qcow2 with qemu-img, and upload it to Glance as openstack.image_name (default <stack>-web-tier)."""
    from hybrid.machine_images.export import ExportOptions, export_to_openstack

    options = ExportOptions(role, image_id, out_dir, keep, role_name)
    with progress(f"exporting {role}") as on_poll:
        result = export_to_openstack(ctx.settings, options, report=click.echo, on_poll=on_poll)
    click.echo(f"Glance image {result.glance_name}: {result.glance_image_id} (sha256 of the VMDK {result.sha256})")


@image.command("user-data")
@click.option("--role", type=ROLE_CHOICE, required=True)
@click.option("--boot", is_flag=True, help="the boot user data (this stack's settings) instead of the bake recipe")
@click.option("--wheelhouse-url", default="", help="the wheelhouse's presigned URL (`bake` fills it in)")
@click.option("--wheelhouse-sha256", default="", help="the wheelhouse tar's SHA-256 (`bake` fills it in)")
@pass_context
def user_data_command(ctx: Context, role: str, boot: bool, wheelhouse_url: str, wheelhouse_sha256: str) -> None:
    """Print a role's cloud-config: the bake recipe, or with --boot the settings an instance boots with."""
    from hybrid.machine_images.recipes import bake_user_data, boot_user_data

    text = boot_user_data(ctx.settings) if boot else bake_user_data(role, wheelhouse_url, wheelhouse_sha256)
    click.echo(text, nl=False)
