"""A grub.cfg as grub-mkconfig writes it, with the maintenance entry: for the GRUB and first-boot tests."""

GRUB_CFG = """set default="0"
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
fi
menuentry 'Debian GNU/Linux' --class debian --class os $menuentry_id_option 'gnulinux-simple-1234' {
\tlinux\t/boot/vmlinuz root=UUID=1234 ro quiet
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
\tmenuentry 'Debian GNU/Linux, with Linux 6.1' --class debian $menuentry_id_option 'gnulinux-6.1-advanced-1234' {
\t}
}
### BEGIN /etc/grub.d/45_inplace_maintenance ###
menuentry 'Maintenance environment (inplace.migration store)' --id inplace-maintenance {
}
"""
