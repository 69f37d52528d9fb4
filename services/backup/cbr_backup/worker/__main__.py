from cbr_backup.worker.main import main

main()
