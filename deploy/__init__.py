"""Getting a bundle onto a Raspberry Pi: the device archive (bundle.py), its installer (install.sh), the ssh
copy (deploy.sh) and an emulated arm64 proof run (pi_sim.sh). Host side only: nothing here runs on the Pi
except install.sh, which travels inside the archive."""
