"""efibootmgr outputs in the formats its versions print, and PE headers, for the UEFI tests.

The efibootmgr texts follow outputs published for real machines (OVMF under QEMU, a Debian PC
with Windows beside it, efivar 38's bare file paths); the PARTUUIDs are the samples' own.
"""

import struct

ESP_PARTUUID = "1b1bd2f6-5c3e-4f0e-9d3a-5a1c2b3d4e5f"

# Debian 12 (efibootmgr 17) on OVMF: label and device path separated by a tab.
OVMF_DEBIAN = """BootCurrent: 0004
Timeout: 0 seconds
BootOrder: 0004,0001,0000,0002,0003
Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)
Boot0001* UEFI QEMU HARDDISK QM00001 \tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0x0)N.....YM....R,Y.
Boot0002* UEFI PXEv4 (MAC:525400123456)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.00.0.0.0,0,0)N.....YM....R,Y.
Boot0003* EFI Internal Shell\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)
Boot0004* debian\tHD(1,GPT,%s,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)
""" % ESP_PARTUUID

# A PC with Windows and two Debian entries (one on a stick), label and path separated by a space,
# with a BootNext set and an inactive entry.
PC_SPACES = """BootCurrent: 0002
BootNext: 0005
Timeout: 1 seconds
BootOrder: 0002,0004,0001,0000,0005
Boot0000* Windows Boot Manager VenHw(99e275e7-75a0-4b37-a2e6-c5385e6c00cb)WINDOWS.........x...B.C.D.O.B.J.E.C.T.
Boot0001* debian HD(1,GPT,77ed79e1-ae0b-4979-827f-ad7b119d688b,0x1000,0xff000)/File(\\EFI\\DEBIAN\\shimx64.efi)
Boot0002* debian HD(1,GPT,fe906d3a-ed18-4d9a-a6cd-41b14322b3ad,0x800,0x106000)/File(\\EFI\\debian\\shimx64.efi)
Boot0004  UEFI : Built-in EFI Shell VenMedia(5023b95c-db26-429b-a648-bd47664c8012)..BO
Boot0005* inplace.migration maintenance HD(1,GPT,fe906d3a-ed18-4d9a-a6cd-41b14322b3ad,0x800,0x106000)/File(\\EFI\\debian\\shimx64.efi)
"""

# efibootmgr 18 with efivar 38: bare file paths running into the optional data, and indented dp: lines.
EFIVAR38 = """BootCurrent: 0001
Timeout: 3 seconds
BootOrder: 0001,0000,0003
Boot0000* Enter Setup\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)
      dp: 04 07 14 00 c9 bd b8 7c eb f8 34 4f aa ea 3e e4 af 65 16 a1 / 04 06 14 00 21 aa 2c 46 14 76 03 45 83 6e 8a b6 f4 66 23 31 / 7f ff 04 00
Boot0001* Fedora\tHD(1,GPT,82f3e1c8-8654-4797-a584-90f373331323,0x800,0x96000)/\\EFI\\fedora\\shimx64.efi
      dp: 04 01 2a 00 01 00 00 00 00 08 00 00 00 00 00 00 00 60 09 00 00 00 00 00 c8 e1 f3 82 54 86 97 47 a5 84 90 f3 73 33 13 23 02 02
Boot0003* UEFI OS\tHD(1,GPT,82f3e1c8-8654-4797-a584-90f373331323,0x800,0x96000)/\\EFI\\BOOT\\BOOTX64.EFI0000424f
"""


def pe_header(signed=True, pe32_plus=True, directories=16, pe_offset=0x80):
    """The first bytes of a PE file: DOS header, PE signature, COFF header, optional header and data
    directories, with the security directory (4) filled when ``signed``."""
    optional_size = (112 if pe32_plus else 96) + 8 * directories
    head = bytearray(pe_offset + 24 + optional_size)
    head[0:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, pe_offset)
    head[pe_offset:pe_offset + 4] = b"PE\0\0"
    struct.pack_into("<HH", head, pe_offset + 4, 0x8664, 1)
    struct.pack_into("<H", head, pe_offset + 20, optional_size)
    optional = pe_offset + 24
    struct.pack_into("<H", head, optional, 0x20B if pe32_plus else 0x10B)
    count_at = optional + (108 if pe32_plus else 92)
    struct.pack_into("<I", head, count_at, directories)
    if signed and directories > 4:
        struct.pack_into("<II", head, count_at + 4 + 8 * 4, 14189056, 1472)
    return bytes(head)
