"""freeswitch"""
