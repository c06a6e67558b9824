// The console's entry point (being written).
document.getElementById("main").textContent = "localrouter console";
