"""LVM's JSON reports of one volume group, and a stand-in for LVM's tools, for tests that run without LVM."""

import json

from ansible_collections.inplace.migration.plugins.module_utils.common.units import MiB
from ansible_collections.inplace.migration.plugins.module_utils.disk import lvm as _lvm

EXTENT = 4 * MiB

# As lvm2 2.03.16 prints them (vgs/lvs/pvs with lvm.REPORT), for a 200 MiB PV with a 100 MiB LV.
VGS = """  {
      "report": [
          {
              "vg": [
                  {"vg_name":"vg0", "vg_uuid":"rE3DhD-sOZp-zMpc-LTSg-ST4r-DIDo-6ihePH", "vg_size":"205520896",
                   "vg_free":"100663296", "vg_extent_size":"4194304", "vg_extent_count":"49", "vg_free_count":"24"}
              ]
          }
      ]
  }
"""
LVS = """  {
      "report": [
          {
              "lv": [
                  {"lv_name":"root", "lv_uuid":"D4QVHD-yeGf-dAgC-49Ts-HMmb-bONZ-EowUmN", "lv_path":"/dev/vg0/root",
                   "lv_size":"104857600", "segtype":"linear"}
              ]
          }
      ]
  }
"""
PVS = """  {
      "report": [
          {
              "pv": [
                  {"pv_name":"/dev/sda2", "pv_uuid":"UDRqCK-utR7-DoPn-Iz95-BnoS-8yMi-KdCYSU", "pv_size":"205520896"}
              ]
          }
      ]
  }
"""


def group(free_extents, root_bytes, others=(), extents=None, segtype="linear"):
    lvs = (_lvm.LogicalVolume("root", "lv-uuid", "/dev/vg0/root", root_bytes, segtype),) + tuple(others)
    used = sum(lv.size for lv in lvs) // EXTENT
    return _lvm.VolumeGroup("vg0", "vg-uuid", EXTENT, extents or used + free_extents, free_extents, lvs, ("/dev/sda2",))


class Recorder:
    """Answers LVM's reports from a model volume group and dumpe2fs from a model filesystem; records the rest."""

    def __init__(self, vg, fs_bytes, blkid=None):
        self.vg = vg
        self.fs_bytes = fs_bytes
        self.commands = []
        self.blkid = blkid or {}  # {path: "KEY=value\n..."} as blkid -o export prints a device's signature

    def _report(self, kind, selected=None):
        vg = self.vg
        rows = {"vgs": ("vg", [{"vg_name": vg.name, "vg_uuid": vg.uuid, "vg_extent_size": str(vg.extent),
                                "vg_extent_count": str(vg.extents), "vg_free_count": str(vg.free_extents)}]),
                "lvs": ("lv", [{"vg_name": vg.name, "lv_name": lv.name, "lv_uuid": lv.uuid, "lv_path": lv.path,
                                "lv_size": str(lv.size), "segtype": lv.segtype, "lv_tags": ",".join(lv.tags)}
                               for lv in vg.lvs if selected in (None, "lv_uuid=" + lv.uuid)]),
                "pvs": ("pv", [{"pv_name": pv} for pv in vg.pvs])}[kind]
        return json.dumps({"report": [{rows[0]: rows[1]}]})

    def _resize(self, name, extents):
        lvs = tuple(lv if lv.name != name else _lvm.LogicalVolume(lv.name, lv.uuid, lv.path, extents * EXTENT)
                    for lv in self.vg.lvs)
        self._set(lvs)

    def _set(self, lvs):
        used = sum(lv.size for lv in lvs) // EXTENT
        self.vg = _lvm.VolumeGroup(self.vg.name, self.vg.uuid, EXTENT, self.vg.extents, self.vg.extents - used, lvs,
                                   self.vg.pvs)

    def run(self, args, ok=(0,), data=None):
        command = args[0]
        if command in ("vgs", "lvs", "pvs"):
            return 0, self._report(command, args[args.index("--select") + 1] if "--select" in args else None), ""
        self.commands.append(" ".join(str(a) for a in args))
        if command == "dumpe2fs":
            return 0, "Block count: %d\nBlock size: 4096\n" % (self.fs_bytes // 4096), ""
        if command == "blkid":
            return 0, "".join("DEVNAME=%s\n%s" % (path, self.blkid[path]) for path in args[4:] if path in self.blkid), ""
        if command == "resize2fs" and len(args) > 2:
            self.fs_bytes = int(args[-1][:-1]) * 1024
        elif command == "resize2fs":
            self.fs_bytes = self.vg.lv("root").size
        elif command in ("lvreduce", "lvextend"):
            self._resize(args[-1].split("/")[1], int(args[args.index("--extents") + 1]))
        elif command == "lvcreate":
            name = args[args.index("--name") + 1]
            size = int(args[args.index("--extents") + 1]) * EXTENT
            tags = tuple(args[i + 1] for i, arg in enumerate(args) if arg == "--addtag")
            self._set(self.vg.lvs + (_lvm.LogicalVolume(name, "new", "/dev/vg0/" + name, size, tags=tags),))
        elif command == "lvremove":
            self._set(tuple(lv for lv in self.vg.lvs if lv.name != args[-1].split("/")[1]))
        return 0, "", ""

    def output(self, args, ok=(0,)):
        return self.run(args, ok)[1]
