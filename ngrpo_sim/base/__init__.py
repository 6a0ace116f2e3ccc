"""What every layer may use: checks of user input and of the machine's memory (``checks``), atomic
writes and folders (``files``), HTML escaping of text from run folders (``escaping``), and one
colour per method with the figure helpers (``plotting``).

Imports nothing of ngrpo_sim: it is the floor of the house.
"""
