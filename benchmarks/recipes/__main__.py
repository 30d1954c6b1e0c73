from benchmarks.recipes.run import main

main()
