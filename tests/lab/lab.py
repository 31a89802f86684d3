"""The VM lab: build the images, start and stop lab PCs, reach them.

    python tests/lab/lab.py build [old-msdos old-gpt old-msdos-boot old-gpt-uefi old-gpt-uefi-boot old-gpt-uefi-lvm new maintenance]   (default: all)
    python tests/lab/lab.py start --lab DIR [--count N] [--layout msdos --layout gpt]
                               [--devices bus=virtio,stick=usb --devices bus=scsi,stick=scsi-first]
                               [--serve-images | --guestfwd-port P]
    python tests/lab/lab.py inventory --lab DIR
    python tests/lab/lab.py ssh --lab DIR pc1 [command ...]
    python tests/lab/lab.py power-cut --lab DIR pc1        (kill QEMU; start brings it back)
    python tests/lab/lab.py stop --lab DIR

Builds are cached under ~/.cache/inplace-migration/lab (or $INPLACE_CACHE/lab).
``start`` on a lab that already has PCs starts those that are not running (after a
power cut) and adds ``--count`` new ones. Run as root (loop devices, mmdebstrap).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.lab import images, machines  # noqa: E402

BUILDS = {
    "old-msdos": lambda: images.old_pc("msdos"),
    "old-gpt": lambda: images.old_pc("gpt"),
    "old-msdos-boot": lambda: images.old_pc("msdos-boot"),
    "old-gpt-uefi": lambda: images.old_pc("gpt-uefi"),
    "old-gpt-uefi-boot": lambda: images.old_pc("gpt-uefi-boot"),
    "old-gpt-uefi-lvm": lambda: images.old_pc("gpt-uefi-lvm"),
    "new": images.new_image,
    "new-uefi": lambda: images.new_image(firmware="uefi"),
    "maintenance": images.maintenance_base,
}


def build(args):
    unknown = sorted(set(args.what) - set(BUILDS))
    if unknown:
        raise machines.LabError("nothing called %s to build; choose from %s" % (
            ", ".join(unknown), ", ".join(sorted(BUILDS))))
    results = {}
    for what in args.what or sorted(BUILDS):
        print("building %s ..." % what, file=sys.stderr, flush=True)
        results[what] = BUILDS[what]()
    print(json.dumps(results, indent=2, sort_keys=True))


def served_images(directory):
    """{name: {url, checksum, local}} of the new images the lab's HTTP server offers the PCs."""
    offered = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".sha256"):
            image = name[:-len(".sha256")]
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                digest = handle.read().split()[0]
            offered[image] = {"url": "http://%s/%s" % (machines.GUEST_HTTP.replace(":80", ""), image),
                              "checksum": "sha256:" + digest, "local": os.path.join(directory, image)}
    return offered


# What --devices takes: each key once, comma-separated (bus=scsi,stick=scsi-first); stick=none is no stick;
# secure_boot (a UEFI PC's firmware; on unless said otherwise).
DEVICE_CHOICES = {"bus": machines.SYSTEM_BUSES, "stick": ("none",) + machines.STICK_PLACES,
                  "secure_boot": ("on", "off")}


def devices_spec(text):
    """One --devices value as ``Lab.add``'s ``devices``: {"bus": ..., "stick": True, "stick_place": ...,
    "secure_boot": False}."""
    given = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        if not equals or key not in DEVICE_CHOICES or key in given:
            raise argparse.ArgumentTypeError("%r is not bus=BUS,stick=PLACE (each key once), such as "
                                             "bus=scsi,stick=scsi-first" % text)
        if value not in DEVICE_CHOICES[key]:
            raise argparse.ArgumentTypeError("%s=%s: %s is one of %s" % (key, value, key, ", ".join(DEVICE_CHOICES[key])))
        given[key] = value
    devices = {"bus": given.get("bus", "virtio")}
    if given.get("stick", "none") != "none":
        devices.update(stick=True, stick_place=given["stick"])
    if given.get("secure_boot") == "off":
        devices["secure_boot"] = False
    try:  # a stick ahead on another controller than the system disk's is refused here, before any PC is made
        machines.disk_devices("system", devices["bus"], "stick" if devices.get("stick") else None,
                              devices.get("stick_place", "usb"))
    except machines.LabError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return devices


def new_pcs(count, layouts, devices):
    """(layout, devices or None) for each of ``count`` new PCs: --layout and --devices each in turn, from the
    first again when there are more PCs than values."""
    layouts = layouts or ["msdos"]
    return [(layouts[index % len(layouts)], devices[index % len(devices)] if devices else None)
            for index in range(count)]


def start(args):
    lab = machines.Lab(args.lab)
    port = args.guestfwd_port
    offered = {}
    if args.serve_images:
        directory = images.new_image(firmware=args.image_firmware)
        port = lab.serve(directory)
        offered = served_images(directory)
    if args.count or not lab.pcs:
        count = args.count or max(len(args.layout or []), len(args.devices or [])) or 1
        for layout, devices in new_pcs(count, args.layout, args.devices):
            lab.add(1, [layout], port, devices=devices)
    seconds = lab.start(timeout=args.timeout)
    print(json.dumps({"inventory": lab.inventory, "seconds_to_ssh": seconds, "images": offered,
                      "pcs": {name: {"port": pc["port"], "layout": pc["layout"], "devices": pc.get("devices")}
                              for name, pc in lab.pcs.items()}},
                     indent=2, sort_keys=True))


def stop(args):
    print(json.dumps(machines.Lab(args.lab).stop(timeout=args.timeout), indent=2, sort_keys=True))


def power_cut(args):
    lab = machines.Lab(args.lab)
    if not lab.power_cut(args.name):
        raise machines.LabError("%s is not running" % args.name)


def inventory(args):
    lab = machines.Lab(args.lab)
    with open(lab.inventory, encoding="utf-8") as handle:
        sys.stdout.write(handle.read())


def ssh(args):
    lab = machines.Lab(args.lab)
    if args.name not in lab.pcs:
        raise machines.LabError("no PC named %s in %s" % (args.name, lab.directory))
    command = lab.ssh_command(args.name, *args.command)
    os.execvp(command[0], command)


def parser():
    top = argparse.ArgumentParser(description="The inplace.migration VM lab.")
    sub = top.add_subparsers(dest="action", required=True)
    step = sub.add_parser("build", help="build (or find cached) images and print their paths")
    step.add_argument("what", nargs="*", help="any of %s (default: all)" % ", ".join(sorted(BUILDS)))
    step.set_defaults(func=build)
    for name, func, helptext in (("start", start, "start lab PCs and write the inventory"),
                                 ("stop", stop, "shut the lab's PCs down and remove their overlays"),
                                 ("inventory", inventory, "print the lab's inventory"),
                                 ("ssh", ssh, "log in to a lab PC as the admin account"),
                                 ("power-cut", power_cut, "kill a PC's QEMU at once")):
        step = sub.add_parser(name, help=helptext)
        step.add_argument("--lab", required=True, help="the lab's directory (state, overlays, logs, inventory)")
        step.set_defaults(func=func)
        if name == "start":
            step.add_argument("--count", type=int, default=0, help="how many new PCs (default: 1 for a new lab)")
            step.add_argument("--layout", action="append", choices=sorted(images.LAYOUTS),
                              help="disk layout of the new PCs, in turn (repeatable; default msdos)")
            step.add_argument("--devices", action="append", type=devices_spec, metavar="bus=BUS,stick=PLACE",
                              help="system disk bus (%s) and stick (none, %s) of the new PCs, in turn (repeatable; "
                                   "default: the plain virtio system disk, no stick)" % (
                                       ", ".join(machines.SYSTEM_BUSES), ", ".join(machines.STICK_PLACES)))
            step.add_argument("--guestfwd-port", type=int,
                              help="a 127.0.0.1 port the PCs reach as http://%s" % machines.GUEST_HTTP)
            step.add_argument("--serve-images", action="store_true",
                              help="serve the new images over HTTP to the PCs (instead of --guestfwd-port)")
            step.add_argument("--image-firmware", choices=("bios", "uefi"), default="bios",
                              help="serve the new image for BIOS PCs (GRUB for BIOS) or for UEFI PCs (the signed "
                                   "chain)")
        if name in ("start", "stop"):
            step.add_argument("--timeout", type=int, default=600 if name == "start" else 90)
        if name in ("ssh", "power-cut"):
            step.add_argument("name")
        if name == "ssh":
            step.add_argument("command", nargs=argparse.REMAINDER)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except machines.LabError as error:
        print("lab: %s" % error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
