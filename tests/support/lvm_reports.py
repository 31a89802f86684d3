"""LVM's JSON reports of one volume group, for tests that read them without LVM."""

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
